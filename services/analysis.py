"""The analyses: one watermarked, incremental engine per parameter set, and what is read from them.

Frames, candles, the latest bar, the statistics and the backtest are all read here. Work that is
the same for every tab goes through `shared` (single flight): the statistics of a revision, a
chart's tail for one second, a whole figure for a range are computed once per process, and
concurrent misses wait for that one computation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pandas as pd

from services import metrics, stats
from services.backtest import BacktestParams, backtest
from services.bars import bar_open, to_bars
from services.engine import PairEngine, Params
from services.singleflight import SingleFlight
from services.sources import iso_utc
from services.store import PriceStore

MAX_ENGINES = 4
STATS_EVERY_S = 30


def lateness_s(poll_interval_s: float) -> float:
    """How late a tick may land and still only update bars in place: two poll intervals (2 s at
    least). Bars older than that are final."""
    return max(2.0, 2.0 * poll_interval_s)


class Analyses:
    def __init__(self, store: PriceStore, span_s: int, ffill_s):
        self.store = store
        self.span_s = span_s
        self._ffill_s = ffill_s  # a function: the source decides it, and opens lazily
        self._engines: OrderedDict[Params, PairEngine] = OrderedDict()
        self._lock = threading.Lock()
        self.shared = SingleFlight()

    @staticmethod
    def _restarted(_params: Params) -> None:
        metrics.ANALYSIS_RECOMPUTES.inc()

    def engine(self, params: Params) -> PairEngine:
        """The engine for `params`: the few most recently used stay warm (cheap per tick)."""
        with self._lock:
            engine = self._engines.pop(params, None)
            if engine is None:
                engine = PairEngine(params, self.store, self._ffill_s(), self.span_s, on_restart=self._restarted)
            self._engines[params] = engine
            while len(self._engines) > MAX_ENGINES:
                self._engines.popitem(last=False)
        return engine

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
        return self.engine(params).frame(int(start_s), int(end_s), int(now_s), late_s)

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
        step = max(params.tf_s, step_s)
        df = self.frame(params, now_s - 2 * step + 1, now_s, now_s, late_s)
        priced = df[df[list(params.pair)].notna().all(axis=1)]
        return priced.iloc[-1] if len(priced) else (df.iloc[-1] if len(df) else None)

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
        engine = self.engine(params)
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
