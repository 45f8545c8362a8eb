"""The service layer every page and API route talks to: `MarketService`.

`refresh()` is called by every tab's `dcc.Interval` callbacks, many times a second in all. It
asks the upstream source at most once per poll interval, whatever the number of tabs, pages
and workers: a process lets one caller through at a time (the others return at once with what
is stored), and across processes the poll slot is claimed in the shared flask-caching store
with an atomic `add` (`services.cache.AtomicFileSystemCache` by default; Redis's SET NX works
too). The worker that wins a slot shares its ticks through the same cache; the others ingest
those.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict

import numpy as np
import pandas as pd
from flask import current_app

from services import stats
from services.alerts import AlertMonitor
from services.backtest import BacktestParams, backtest
from services.bars import bar_open, to_bars
from services.binance import BinanceError, BinanceRateLimited
from services.engine import PairEngine, Params
from services.settings import AppConfig, SettingsStore, UserSettings, validate
from services.sources import Tick, iso_utc, open_source
from services.store import PriceStore

MIN_BACKFILL_S = 900
SYMBOLS_TTL_S = 3_600
MAX_ENGINES = 4
RATE_LIMIT_KEY = "upstream:rate-limited-until"
DEFAULT_RETRY_AFTER_S = {429: 60, 418: 120}  # when the answer carries no Retry-After
STATS_EVERY_S = 30


class MarketService:
    def __init__(self, config: AppConfig, cache, clock=None, source=None):
        """`clock` defaults to the source's own (wall time, or replay time for a replay)."""
        self.config = config
        self.cache = cache
        self._clock = clock
        self.settings_store = SettingsStore(config.data_dir)
        self.store = PriceStore(config.history_s)
        self.alerts = AlertMonitor()
        self.source_note = "source given by the caller" if source is not None else ""
        self._source = source
        self._source_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._last_slot: int | None = None
        self._pending: deque[str] = deque(maxlen=8)  # slot keys another worker polls
        self._history_from: dict[str, int] = {}  # earliest second backfilled, per symbol
        self._engines: OrderedDict[Params, PairEngine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._alert_key = None
        self._alert_cursor: int | None = None
        self.last_error: dict | None = None
        self.upstream_polls = 0
        self.worker_id = f"{os.getpid()}-{id(self)}"

    # --- source and settings -------------------------------------------------------------
    @property
    def source(self):
        """Opened on first use, not at import or construction (`auto` may probe the network)."""
        if self._source is None:
            with self._source_lock:
                if self._source is None:
                    self._source, self.source_note = open_source(
                        self.config.source, self.config.binance_url, clock=self._clock or time.time,
                        seed=self.config.sim_seed, span_s=self.config.history_s, replay=self.config.replay,
                        replay_speed=self.config.replay_speed)
        return self._source

    def clock(self) -> float:
        """Now, in UTC epoch seconds: the market's time (a replay's recorded time)."""
        return self._clock() if self._clock else self.source.now()

    @property
    def ffill_s(self) -> int:
        """Empty seconds a price is carried over: the configured few, or a recording's bar length."""
        return max(self.config.ffill_s, self.source.interval_s)

    @property
    def settings(self) -> UserSettings:
        return self.settings_store.current()

    def symbols(self) -> list[str]:
        """Tradable symbols (exchangeInfo, cached for an hour); the current pair if unknown."""
        key = f"symbols:{self.source.kind}"
        cached = self.cache.get(key)
        if cached:
            return cached
        if self.rate_limited_until():
            return sorted(set(self.settings.pair))
        try:
            symbols = self.source.symbols()
        except BinanceError as exc:
            self._record_error(exc)
            return sorted(set(self.settings.pair))
        self.cache.set(key, symbols, timeout=SYMBOLS_TTL_S)
        return symbols

    def save_settings(self, raw: dict) -> UserSettings:
        """Validate a (partial) settings change against the source's symbols and persist it.

        Raises SettingsError with a user-facing message; nothing is saved then.
        """
        merged = {**asdict(self.settings), **raw}
        return self.settings_store.save(validate(merged, set(self.symbols())))

    # --- refresh ---------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Poll upstream if this poll interval has not been polled yet; True if this call did."""
        if not self._refresh_lock.acquire(blocking=False):
            return False
        try:
            settings = self.settings
            self.store.retain(settings.pair)
            self._history_from = {k: v for k, v in self._history_from.items() if k in settings.pair}
            now = self.clock()
            polled = self._poll(settings, now)
            self._ingest_pending(settings)
            self._evaluate_alerts(settings, now)
            return polled
        finally:
            self._refresh_lock.release()

    def _slot_timeout(self, settings) -> int:
        return max(2, math.ceil(settings.poll_interval_s * 4))

    def _poll(self, settings: UserSettings, now: float) -> bool:
        slot = int(now // settings.poll_interval_s)
        if slot == self._last_slot:
            return False
        self._last_slot = slot
        if self.rate_limited_until(now):
            return False  # no request at all inside the exchange's Retry-After window
        key = f"poll:{','.join(settings.pair)}:{settings.poll_interval_s}:{slot}"
        if not self.cache.add(key, self.worker_id, timeout=self._slot_timeout(settings)):
            self._pending.append(key)
            return False
        try:
            ticks = self.source.poll(settings.pair)
        except BinanceError as exc:
            self._record_error(exc)
            return True
        finally:
            self.upstream_polls += 1
        self.last_error = None
        self.cache.set(f"ticks:{key}", ticks, timeout=self._slot_timeout(settings))
        self._ingest(ticks, settings)
        return True

    def _ingest_pending(self, settings: UserSettings) -> None:
        for key in list(self._pending):
            ticks = self.cache.get(f"ticks:{key}")
            if ticks is not None:
                self._pending.remove(key)
                self._ingest(ticks, settings)

    def _backfill_span(self, settings: UserSettings) -> int:
        if getattr(self.source, "backfill_all", False):
            return self.config.history_s
        bars = 3 * settings.window * max(self.params(settings).tf_s, self.source.interval_s)
        return min(self.config.history_s, max(MIN_BACKFILL_S, bars + self.ffill_s))

    def _ingest(self, ticks: list[Tick], settings: UserSettings) -> None:
        """Store live ticks. Before a symbol's tick, backfill what the analysis needs and the
        store lacks: the history before its first tick (deeper when a longer window or timeframe
        asks for it) and any hole since its last tick."""
        span = self._backfill_span(settings)
        for tick in ticks:
            if tick.symbol not in settings.pair:
                continue
            second = int(tick.epoch)
            prev = self.store.latest_second(tick.symbol)
            holes = []
            floor = self._history_from.get(tick.symbol)
            if prev is None or floor is None:
                holes.append((second - span, second - 1))
            else:
                if floor > second - span:
                    holes.append((second - span, floor - 1))
                if second - prev > self.ffill_s + 1:
                    holes.append((max(prev + 1, second - self.config.history_s), second - 1))
            for start, end in holes:
                if self.rate_limited_until():
                    break
                try:
                    self.store.add_ticks(self.source.history(tick.symbol, start, end), raw=False)
                except BinanceError as exc:
                    self._record_error(exc)
                    continue
                self._history_from[tick.symbol] = min(start, self._history_from.get(tick.symbol, start))
            self.store.add_ticks([tick])

    def _record_error(self, exc: BinanceError) -> None:
        self.last_error = {**exc.as_dict(), "time_utc": iso_utc(self.clock())}
        if isinstance(exc, BinanceRateLimited):
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S.get(exc.status, 60)
            until = self.clock() + wait
            # shared through the cache: every tab and worker stays quiet until then
            self.cache.set(RATE_LIMIT_KEY, until, timeout=math.ceil(wait) + 1)

    def rate_limited_until(self, now: float | None = None) -> float | None:
        """End of the exchange's Retry-After window (429/418), or None outside one."""
        until = self.cache.get(RATE_LIMIT_KEY)
        now = self.clock() if now is None else now
        return until if until is not None and until > now else None

    # --- analytics and alerts --------------------------------------------------------------
    def params(self, settings: UserSettings | None = None, **overrides) -> Params:
        """The analysis parameters of `settings` (default: the saved ones), with overrides."""
        s = settings or self.settings
        base = {"pair": s.pair, "tf": s.timeframe, "hedge": s.hedge, "window": s.window, "log": s.log_prices}
        return Params(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    def engine(self, params: Params) -> PairEngine:
        """The engine for `params`: the few most recently used stay warm (cheap per tick)."""
        with self._engines_lock:
            engine = self._engines.pop(params, None)
            if engine is None:
                engine = PairEngine(params, self.store, self.ffill_s, self.config.history_s)
            self._engines[params] = engine
            while len(self._engines) > MAX_ENGINES:
                self._engines.popitem(last=False)
        return engine

    def frame(self, start_s: int, end_s: int, params: Params | None = None) -> pd.DataFrame:
        """Bars with open time in [start_s, end_s] (default parameters: the saved settings):
        the two legs' prices, β, α, spread, rolling mean, std and z."""
        return self.engine(params or self.params()).frame(int(start_s), int(end_s), int(self.clock()))

    def ohlc(self, start_s: int, end_s: int, params: Params | None = None) -> pd.DataFrame | None:
        """Open, high, low, close of both legs per bar of the timeframe (None at 1 s: no candles)."""
        params = params or self.params()
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

    def latest(self, params: Params | None = None) -> pd.Series | None:
        """The newest bar with prices (the open bar, or the one before while the open bar has
        none yet): current prices, β, spread, mean, std, z."""
        params = params or self.params()
        now = int(self.clock())
        step = max(params.tf_s, self.source.interval_s)
        df = self.frame(now - 2 * step + 1, now, params)
        priced = df[df[list(params.pair)].notna().all(axis=1)]
        return priced.iloc[-1] if len(priced) else (df.iloc[-1] if len(df) else None)

    def statistics(self, corr_window: int, params: Params | None = None) -> dict:
        """ADF, half-life and return correlation over the committed bars (the last
        `stats.ADF_MAX_OBS`), recomputed every STATS_EVERY_S or when the inputs change."""
        params = params or self.params()
        now = self.clock()
        engine = self.engine(params)
        engine.update(int(now))
        key = f"stats:{params}:{corr_window}:{engine.resets}:{int(now // STATS_EVERY_S)}"
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        df = engine.committed_after(None).tail(stats.ADF_MAX_OBS)
        a, b = params.pair
        result = {**stats.summary(df["spread"].to_numpy(), df[a].to_numpy(), df[b].to_numpy(), corr_window),
                  "computed_utc": iso_utc(now), "tf_s": params.tf_s}
        self.cache.set(key, result, timeout=2 * STATS_EVERY_S)
        return result

    def backtest(self, bt: BacktestParams, params: Params | None = None) -> dict:
        """The mean-reversion backtest over every committed bar of the analysis."""
        params = params or self.params()
        engine = self.engine(params)
        engine.update(int(self.clock()))
        df = engine.committed_after(None)
        valid = df["zscore"].notna().to_numpy()
        df = df.iloc[int(valid.argmax()):] if valid.any() else df.iloc[:0]  # from the first defined z
        a, b = params.pair
        times = [iso_utc(t.timestamp()) for t in df.index]
        result = backtest(times, df[a].to_numpy(), df[b].to_numpy(), df["beta"].to_numpy(), df["zscore"].to_numpy(),
                          bt.entry, bt.exit_level, bt.stop, bt.cost_bps, 365 * 86_400 / params.tf_s)
        result["times"] = df.index
        return result

    def _evaluate_alerts(self, settings: UserSettings, now: float) -> None:
        """Feed the alert monitor every closed bar it has not seen, once."""
        params = self.params(settings)
        engine = self.engine(params)
        engine.update(int(now))
        key = (params, settings.threshold)
        if key != self._alert_key:
            last = engine.committed_after(engine.end - params.tf_s if engine.end is not None else None)["zscore"]
            self.alerts.reset(float(last.iloc[-1]) if len(last) else None, settings.threshold)
            self._alert_key, self._alert_cursor = key, engine.end
            return
        df = engine.committed_after(self._alert_cursor)
        if len(df):
            self.alerts.evaluate(df.index, df["zscore"].to_numpy(), df["spread"].to_numpy(),
                                 settings.threshold, settings.pair_label)
            self._alert_cursor = int(df.index[-1].timestamp())

    # --- what pages and the API show -------------------------------------------------------
    def stale_after_s(self, settings: UserSettings | None = None) -> float:
        return max(5.0, 3 * (settings or self.settings).poll_interval_s, 2.0 * self.source.interval_s)

    def status(self) -> dict:
        """Source, freshness and the last upstream error: the navbar and /api/health."""
        settings = self.settings
        now = self.clock()
        last = {s: self.store.last_tick(s) for s in settings.pair}
        ages = {s: (None if t is None else round(now - t.epoch, 3)) for s, t in last.items()}
        known = [t for t in last.values() if t is not None]
        oldest = min(known, key=lambda t: t.epoch) if len(known) == len(last) else None
        age = None if oldest is None else round(now - oldest.epoch, 3)
        if age is None:
            state = "starting" if self.last_error is None else "error"
        else:
            state = "ok" if age <= self.stale_after_s(settings) else "stale"
        source = self.source
        limited = self.rate_limited_until(now)
        return {
            "status": state,
            "source": source.kind,
            "source_label": source.label,
            "simulated": source.simulated,
            "source_note": self.source_note,
            "symbols": list(settings.pair),
            "last_tick_utc": None if oldest is None else iso_utc(oldest.epoch),
            "age_s": age,
            "ages_s": ages,
            "stale_after_s": self.stale_after_s(settings),
            "last_error": self.last_error,
            "rate_limited_until_utc": None if limited is None else iso_utc(limited),
            "rate_limit_resumes_in_s": None if limited is None else round(limited - now, 1),
            "upstream_polls": self.upstream_polls,
            "settings_error": self.settings_store.load_error,
        }

    def leg_summary(self, symbol: str) -> dict | None:
        """A symbol's last tick, its age, whether it is stale, and the first price of the rolling
        window (window bars of the timeframe) for the change over it; None before any tick."""
        last = self.store.last_tick(symbol)
        if last is None:
            return None
        settings = self.settings
        now = self.clock()
        window_s = settings.window * self.params(settings).tf_s
        prices = self.store.prices(symbol, int(now) - window_s + 1, int(now))
        valid = prices[~np.isnan(prices)]
        age = now - last.epoch
        return {"last": last, "age_s": age, "stale": age > self.stale_after_s(settings), "window_s": window_s,
                "first_price": float(valid[0]) if len(valid) else None}

    def recent_ticks(self, limit: int = 50, symbols=None) -> list[Tick]:
        return self.store.recent_ticks(symbols or self.settings.pair, limit)


def current_market() -> MarketService:
    """The MarketService of the Flask app serving this request (set by `app.create_app`)."""
    return current_app.extensions["market"]
