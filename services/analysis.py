"""The analyses: one watermarked, incremental engine per parameter set, and what is read from them.

Frames, candles, the latest bar, the statistics and the backtest are all read here. Work that is
the same for every tab goes through `shared` (single flight): the statistics of a revision, a
chart's tail for one second, a whole figure for a range are computed once per process, and
concurrent misses wait for that one computation.

Work is bounded by what was asked. The saved parameters' engine (the live one: pages, alerts)
covers the whole history; it is pinned, so no request can evict it, and a new one is built on a
background thread (`warm`), never on the ingest path. Any other parameter set (an API request's
`hedge=`, `window=`...) gets an engine that starts where the request's range needs it: the range
plus `warmup_bars` for the windowed methods, the whole history for the recursive ones (cheap:
O(bars)). A new engine whose estimated cost is over WORK_BUDGET_US is refused (`TooMuchWork`,
a 400 naming the limit) before any of it is computed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from services import hedge, metrics, stats
from services.backtest import BacktestParams, backtest
from services.bars import bar_open, to_bars
from services.engine import COLUMNS, PairEngine, Params
from services.singleflight import SingleFlight
from services.sources import iso_utc
from services.store import PriceStore

MAX_ENGINES = 4  # engines of other parameter sets kept warm, besides the live one
STATS_EVERY_S = 30
WORK_BUDGET_US = 1_500_000  # estimated CPU a request may start for a new parameter set
WARM_WAIT_S = 0.25  # a refresh waits this long for a new engine's history; longer, it is built aside


class TooMuchWork(ValueError):
    """A request would start more computation than WORK_BUDGET_US; the message says what to ask."""


def cost_per_bar_us(params: Params) -> float:
    """Estimated CPU per bar (measured by bench/analytics.py on this class of machine)."""
    if params.hedge == "robust":
        return 0.03 * len(hedge.robust_pairs(min(params.window, hedge.ROBUST_MAX_BARS))[0])
    return 3.0 if params.hedge == "kalman" else 1.0


def warmup_bars(params: Params) -> int | None:
    """Bars before a range that make its values exact: β over `window` bars, then z over `window`
    spreads. None for the recursive methods (expanding OLS, Kalman): they need the whole history."""
    return None if params.hedge in hedge.RECURSIVE else 2 * params.window


def lateness_s(poll_interval_s: float) -> float:
    """How late a tick may land and still only update bars in place: two poll intervals (2 s at
    least). Bars older than that are final."""
    return max(2.0, 2.0 * poll_interval_s)


class Analyses:
    def __init__(self, store: PriceStore, span_s: int, ffill_s):
        self.store = store
        self.span_s = span_s
        self._ffill_s = ffill_s  # a function: the source decides it, and opens lazily
        self._engines: OrderedDict[Params, PairEngine] = OrderedDict()  # other parameter sets, LRU
        self._live: dict[tuple[str, str], PairEngine] = {}  # each watched pair's saved parameters: pinned
        self._warming: dict[PairEngine, threading.Thread] = {}
        self._lock = threading.Lock()
        self.shared = SingleFlight()

    @staticmethod
    def _restarted(_params: Params) -> None:
        metrics.ANALYSIS_RECOMPUTES.inc()

    def _new(self, params: Params, anchor_s: int | None = None) -> PairEngine:
        return PairEngine(params, self.store, self._ffill_s(), self.span_s, self._restarted, anchor_s)

    def live(self, params: Params) -> PairEngine:
        """The engine of a watched pair's saved parameters (whole history): pinned, replaced when
        they change."""
        with self._lock:
            engine = self._live.get(params.pair)
            if engine is None or engine.p != params:
                engine = self._engines.pop(params, None)
                if engine is None or engine.anchor_s is not None:
                    engine = self._new(params)
                self._live[params.pair] = engine
            return engine

    def keep_live(self, pairs) -> None:
        """Unpin the engines of pairs no longer watched."""
        with self._lock:
            for pair in [p for p in self._live if p not in pairs]:
                del self._live[pair]

    def warm(self, engine: PairEngine, now_s: int, late_s: float, wait_s: float = WARM_WAIT_S) -> bool:
        """Build a new engine's history on a background thread (once), off the ingest path; wait
        for it at most `wait_s`. True when it is built."""
        with self._lock:
            builder = self._warming.get(engine)
            if builder is None:
                builder = self._warming[engine] = threading.Thread(
                    target=self._build, args=(engine, now_s, late_s), name="analysis-warm-up", daemon=True
                )
                builder.start()
        builder.join(wait_s)
        return not builder.is_alive()

    def _build(self, engine: PairEngine, now_s: int, late_s: float) -> None:
        try:
            engine.update(now_s, late_s)
        finally:
            with self._lock:
                self._warming.pop(engine, None)

    def engine(self, params: Params, start_s: int | None = None, now_s: int | None = None) -> PairEngine:
        """The engine for `params`: the live one, or one of the few others kept warm. For another
        parameter set read from `start_s` on, an engine that starts there (less its warm-up);
        a new one costing more than WORK_BUDGET_US raises TooMuchWork."""
        with self._lock:
            live = self._live.get(params.pair)
            if live is not None and live.p == params:
                return live
            engine = self._engines.pop(params, None)
            anchor = None
            if start_s is not None and warmup_bars(params) is not None:
                anchor = bar_open(int(start_s), params.tf_s) - warmup_bars(params) * params.tf_s
            if engine is None or (engine.anchor_s is not None and (anchor is None or anchor < engine.anchor_s)):
                engine = self._new(params, anchor)
                if now_s is not None:
                    self._check_budget(engine, now_s)
            self._engines[params] = engine
            while len(self._engines) > MAX_ENGINES:
                self._engines.popitem(last=False)
        return engine

    @staticmethod
    def _check_budget(engine: PairEngine, now_s: int) -> None:
        params = engine.p
        bars = (int(now_s) - engine.first_bar(now_s)) // params.tf_s + 1
        cost = bars * cost_per_bar_us(params)
        if cost > WORK_BUDGET_US:
            most = int(WORK_BUDGET_US / cost_per_bar_us(params))
            raise TooMuchWork(
                f"hedge {params.hedge} (window {params.window}) over {bars:,} bars of {params.tf} is more than "
                f"one request may compute (at most about {most:,} bars); ask for fewer seconds or a coarser "
                "tf, or save these parameters on /settings to have them computed for every page"
            )

    def revision(self, params: Params, now_s: int, late_s: float) -> str:
        """Changes whenever final bars of `params` may have changed (a write older than the
        watermark, or a fresh engine); new bars, and provisional ones changing, do not change it."""
        engine = self.engine(params)
        engine.update(now_s, late_s)
        return f"{id(engine)}:{engine.resets}"

    def final_until(self, params: Params, now_s: int, late_s: float) -> int:
        return self.engine(params).final_until(now_s, late_s)

    def frame(self, params: Params, start_s: int, end_s: int, now_s: int, late_s: float) -> pd.DataFrame:
        """Bars with open time in [start_s, end_s]: the two legs' prices, β, α, spread, rolling
        mean, std and z; final bars, then the provisional ones as they stand at `now_s`."""
        return self.engine(params, start_s, now_s).frame(int(start_s), int(end_s), int(now_s), late_s)

    def arrays(self, params: Params, start_s: int, end_s: int, now_s: int, late_s: float):
        """`frame`'s bars as (open times, {column: values})."""
        return self.engine(params, start_s, now_s).arrays(int(start_s), int(end_s), int(now_s), late_s)

    def ohlc(self, params: Params, start_s: int, end_s: int) -> pd.DataFrame | None:
        """Open, high, low, close of both legs per bar of the timeframe (None at 1 s: no candles)."""
        tf = params.tf_s
        if tf == 1:
            return None
        first = bar_open(int(start_s), tf)
        cols = {}
        for sym in params.pair:
            times, *values = to_bars(first, self.store.prices(sym, first, int(end_s)), tf, ohlc=True)
            cols.update({f"{sym} {name}": v for name, v in zip(("open", "high", "low", "close"), values)})
        index = pd.to_datetime(times, unit="s", utc=True)
        index.name = "timestamp_utc"
        return pd.DataFrame(cols, index=index)

    def latest(self, params: Params, now_s: int, late_s: float, step_s: int) -> pd.Series | None:
        """The newest bar with prices (the open bar, or the one before while the open bar has
        none yet): current prices, β, spread, mean, std, z."""
        start = now_s - 2 * max(params.tf_s, step_s) + 1
        times, cols = self.arrays(params, start, now_s, now_s, late_s)
        if not len(times):
            return None
        priced = np.flatnonzero(~np.isnan(cols["a"]) & ~np.isnan(cols["b"]))
        i = priced[-1] if len(priced) else len(times) - 1
        a, b = params.pair
        values = {a: cols["a"][i], b: cols["b"][i], **{c: cols[c][i] for c in COLUMNS[2:]}}
        return pd.Series(values, name=pd.Timestamp(int(times[i]), unit="s", tz="UTC"))

    def statistics(self, params: Params, corr_window: int, now: float, late_s: float) -> dict:
        """ADF, half-life and return correlation over the final bars (the last
        `stats.ADF_MAX_OBS`), computed once per revision and STATS_EVERY_S, for every tab."""
        revision = self.revision(params, int(now), late_s)
        key = ("stats", params, corr_window, revision, int(now // STATS_EVERY_S))

        def compute():
            df = self.engine(params).committed_after(None).tail(stats.ADF_MAX_OBS)
            a, b = params.pair
            return {
                **stats.summary(df["spread"].to_numpy(), df[a].to_numpy(), df[b].to_numpy(), corr_window),
                "computed_utc": iso_utc(now),
                "tf_s": params.tf_s,
            }

        return self.shared.get(key, compute)

    def backtest(self, params: Params, bt: BacktestParams, now_s: int, late_s: float) -> dict:
        """The mean-reversion backtest over every final bar of the analysis."""
        engine = self.engine(params, None, now_s)
        engine.update(now_s, late_s)
        df = engine.committed_after(None)
        valid = df["zscore"].notna().to_numpy()
        df = df.iloc[int(valid.argmax()) :] if valid.any() else df.iloc[:0]  # from the first defined z
        a, b = params.pair
        times = [iso_utc(t.timestamp()) for t in df.index]
        result = backtest(
            times,
            df[a].to_numpy(),
            df[b].to_numpy(),
            df["beta"].to_numpy(),
            df["zscore"].to_numpy(),
            bt.entry,
            bt.exit_level,
            bt.stop,
            bt.cost_bps,
            365 * 86_400 / params.tf_s,
        )
        result["times"] = df.index
        return result
