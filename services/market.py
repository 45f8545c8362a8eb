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

import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
from flask import current_app

from services import stats
from services.alerts import TEST_RULE, Alert, AlertLog, RuleState, evaluate_rule, initial_state
from services.backtest import BacktestParams, backtest
from services.bars import bar_open, to_bars
from services.binance import INVALID_SYMBOL, BinanceAPIError, BinanceError, BinanceRateLimited
from services.db import Database
from services.engine import PairEngine, Params
from services.history import History
from services.notify import WebhookNotifier
from services.settings import AppConfig, SettingsStore, UserSettings, validate
from services.sources import Tick, iso_utc, open_source
from services.store import PriceStore

log = logging.getLogger(__name__)

MIN_BACKFILL_S = 900
SYMBOLS_TTL_S = 3_600
MAX_ENGINES = 4
RATE_LIMIT_KEY = "upstream:rate-limited-until"
IN_FLIGHT_KEY = "upstream:poll-in-flight"
IN_FLIGHT_MAX_S = 20  # longer than any poll with its retries; frees the flag of a worker that died mid-poll
DEFAULT_RETRY_AFTER_S = {429: 60, 418: 120}  # when the answer carries no Retry-After
STATS_EVERY_S = 30
PRUNE_EVERY_S = 300
HALTED_RECHECK_S = 60


class MarketService:
    def __init__(self, config: AppConfig, cache, clock=None, source=None):
        """`clock` defaults to the source's own (wall time, or replay time for a replay)."""
        self.config = config
        self.cache = cache
        self._clock = clock
        self.db = Database(config.data_dir)
        self.settings_store = SettingsStore(self.db, legacy_dir=config.data_dir)
        self.store = PriceStore(config.history_s)
        self.alerts = AlertLog(self.db)
        self.notifier = WebhookNotifier(self.db)
        self._history: History | None = None
        self._hydrated: set[str] = set()
        self._halted: dict[str, str] = {}  # symbol -> why it is not polled (no longer trading)
        self._halted_checked = 0.0
        self._last_prune = 0.0
        self.url_note = ""  # why the REST host changed, when it did
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
        self._rule_states: dict[str, RuleState] = {}
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
                        self.config.source, self._rest_host(self.settings),
                        clock=self._clock or time.time, seed=self.config.sim_seed, span_s=self.config.history_s,
                        replay=self.config.replay, replay_speed=self.config.replay_speed,
                        fallback_urls=self.config.fallback_urls)
                    client = getattr(self._source, "client", None)
                    if client is not None and client.base_url != self._rest_host(self.settings):
                        self.url_note = self.source_note  # the probe met a 451 and moved on: keep that host
                        self.settings_store.save(replace(self.settings, binance_url=client.base_url))
        return self._source

    def _rest_host(self, settings: UserSettings) -> str:
        """The REST host the settings ask for."""
        return (settings.binance_url or self.config.binance_url).rstrip("/")

    @property
    def _client(self):
        """The REST client of a Binance source (None for the simulation or a replay)."""
        return getattr(self.source, "client", None)

    @property
    def rest_host_in_use(self) -> str | None:
        """The REST host polled now (None when the source is not Binance)."""
        return None if self._client is None else self._client.base_url

    @property
    def _symbols_key(self) -> str:
        return f"symbols:{self.source.label}"

    @property
    def history(self) -> History | None:
        """The persisted history of this source (None for a replay: its time restarts)."""
        key = getattr(self.source, "store_key", None)
        if key is None:
            return None
        if self._history is None or self._history.source != key:
            self._history = History(self.db, key, self.config.history_s)
        return self._history

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
        key = self._symbols_key
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
        """Validate a (partial) settings change against the source's symbols and persist it. A
        newly picked symbol must be trading; the pair already watched may stay even if one leg
        stopped (so that rules, webhook or host can still be changed).

        Raises SettingsError with a user-facing message; nothing is saved then.
        """
        current = self.settings
        merged = {**asdict(current), **raw}
        return self.settings_store.save(validate(merged, set(self.symbols()) | set(current.pair)))

    # --- refresh ---------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Poll upstream if this poll interval has not been polled yet; True if this call did."""
        if not self._refresh_lock.acquire(blocking=False):
            return False
        try:
            settings = self.settings
            self._follow_settings(settings)
            now = self.clock()
            polled = self._poll(settings, now)
            self._ingest_pending(settings)
            self._evaluate_alerts(settings, now)
            if self.history is not None and now - self._last_prune >= PRUNE_EVERY_S:
                self._last_prune = now
                self.history.prune(now)
            return polled
        finally:
            self._refresh_lock.release()

    def _follow_settings(self, settings: UserSettings) -> None:
        """Let go of symbols no longer watched; talk to the REST host the settings name."""
        self.store.retain(settings.pair)
        for table in (self._history_from, self._halted):
            for sym in [k for k in table if k not in settings.pair]:
                del table[sym]
        self._hydrated &= set(settings.pair)
        client = self._client
        want = self._rest_host(settings)
        if client is not None and client.base_url != want:
            log.info("REST host: %s -> %s", client.base_url, want)
            client.set_base_url(want)
            self.last_error = None
            self._halted.clear()

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
        if self._halted and now - self._halted_checked >= HALTED_RECHECK_S:
            self._check_trading(settings, now)
        symbols = [s for s in settings.pair if s not in self._halted]
        if not symbols:
            return False
        if not self.cache.add(IN_FLIGHT_KEY, self.worker_id, timeout=IN_FLIGHT_MAX_S):
            return False  # another worker's poll still waits for its answer: never two in flight
        try:
            ticks = self.source.poll(symbols)
        except BinanceError as exc:
            self._record_error(exc)
            if isinstance(exc, BinanceAPIError) and exc.code == INVALID_SYMBOL:
                self._check_trading(settings, now)
            return True
        finally:
            self.cache.delete(IN_FLIGHT_KEY)
            self.upstream_polls += 1
        self.last_error = None
        self.cache.set(f"ticks:{key}", ticks, timeout=self._slot_timeout(settings))
        self._ingest(ticks, settings, persist_raw=True)
        return True

    def _check_trading(self, settings: UserSettings, now: float) -> None:
        """Ask the exchange which symbols trade (a symbol can stop: delisting, a halt) and stop
        polling those of the pair that do not, so that the other leg stays live."""
        self._halted_checked = now
        try:
            trading = set(self.source.symbols())
        except BinanceError as exc:
            self._record_error(exc)
            return
        self.cache.set(self._symbols_key, sorted(trading), timeout=SYMBOLS_TTL_S)
        self._halted = {s: f"{s} is no longer trading on {self.source.label}" for s in settings.pair
                        if s not in trading}
        for sym, why in self._halted.items():
            log.warning("%s; not polling it", why)

    def _ingest_pending(self, settings: UserSettings) -> None:
        for key in list(self._pending):
            ticks = self.cache.get(f"ticks:{key}")
            if ticks is not None:
                self._pending.remove(key)
                self._ingest(ticks, settings, persist_raw=False)  # the polling worker stored them

    def _backfill_span(self, settings: UserSettings) -> int:
        if getattr(self.source, "backfill_all", False):
            return self.config.history_s
        bars = 3 * settings.window * max(self.params(settings).tf_s, self.source.interval_s)
        return min(self.config.history_s, max(MIN_BACKFILL_S, bars + self.ffill_s))

    def _ingest(self, ticks: list[Tick], settings: UserSettings, persist_raw: bool) -> None:
        """Store live ticks. Before a symbol's tick, fill what the analysis needs and memory
        lacks: the history before its first tick (deeper when a longer window or timeframe asks
        for it) and any hole since its last tick, from the database first, then the exchange."""
        span = self._backfill_span(settings)
        fetched = []
        for tick in ticks:
            if tick.symbol not in settings.pair:
                continue
            self._hydrate(tick.symbol)
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
                    fetched.extend(self._fill(tick.symbol, start, end))
                except BinanceError as exc:
                    self._record_error(exc)
                    continue
                self._history_from[tick.symbol] = min(start, self._history_from.get(tick.symbol, start))
            self.store.add_ticks([tick])
        if self.history is not None:
            live = [t for t in ticks if t.symbol in settings.pair] if persist_raw else []
            self.history.save(fetched + live, live)

    def _hydrate(self, symbol: str) -> None:
        """Load a symbol's recorded history into memory, once (at start, or when it is picked)."""
        if symbol in self._hydrated or self.history is None:
            return
        self._hydrated.add(symbol)
        now = int(self.clock())
        rows = self.history.buckets(symbol, now - self.config.history_s + 1, now)
        self.store.add_ticks(rows, raw=False)
        self.store.add_ticks(self.history.recent_ticks(symbol, self.store.raw_ticks))
        if rows:
            self._history_from[symbol] = int(rows[0].epoch)

    def _fill(self, symbol: str, start: int, end: int) -> list[Tick]:
        """Put [start, end] of `symbol` in memory: what the database has (another process, or
        this one before a restart, recorded it), and the rest from the exchange. Returns what
        came from the exchange."""
        stored = self.history.buckets(symbol, start, end) if self.history is not None else []
        self.store.add_ticks(stored, raw=False)
        gaps = [(start, end)]
        if stored:
            first, last = int(stored[0].epoch), int(stored[-1].epoch)
            gaps = [(a, b) for a, b in ((start, first - 1), (last + 1, end)) if b - a + 1 > self.ffill_s]
        fetched = []
        for a, b in gaps:
            got = self.source.history(symbol, a, b)
            self.store.add_ticks(got, raw=False)
            fetched.extend(got)
        return fetched

    def _record_error(self, exc: BinanceError) -> None:
        self.last_error = {**exc.as_dict(), "time_utc": iso_utc(self.clock())}
        if exc.status == 451:
            self._leave_restricted_host()
        if isinstance(exc, BinanceRateLimited):
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S.get(exc.status, 60)
            until = self.clock() + wait
            # shared through the cache: every tab and worker stays quiet until then
            self.cache.set(RATE_LIMIT_KEY, until, timeout=math.ceil(wait) + 1)

    def _leave_restricted_host(self) -> None:
        """After a 451 (restricted location), move to the next configured fallback host that
        has not answered 451 yet, and save it so that every worker and restart uses it."""
        client = self._client
        if client is None:
            return
        restricted = client.base_url
        order = [u.rstrip("/") for u in (self.config.binance_url, *self.config.fallback_urls)]
        later = order[order.index(restricted) + 1:] if restricted in order else order[1:]
        if later:
            url = later[0]
            self.url_note = f"{restricted} answered HTTP 451 (restricted location); switched to {url}"
            log.warning(self.url_note)
            self.settings_store.save(replace(self.settings, binance_url=url))
            client.set_base_url(url)

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

    def revision(self, params: Params) -> str:
        """Changes whenever bars already computed for `params` may have changed (a write into
        their past, or a fresh engine); new bars at the end do not change it."""
        engine = self.engine(params)
        engine.update(int(self.clock()))
        return f"{id(engine)}:{engine.resets}"

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
        """Run the alert rules over every closed bar not evaluated yet, once, in time order.

        The last evaluated bar is kept in the database per pair, parameters and rules, so after
        a restart the bars backfilled into the hole are evaluated too (nothing missed); a rule
        change starts from the newest bar without firing on the past."""
        params = self.params(settings)
        engine = self.engine(params)
        engine.update(int(now))
        if engine.end is None:
            return
        key = (params, settings.threshold, settings.rules)
        cursor_key = "alerts:cursor:" + hashlib.sha1(repr(key).encode()).hexdigest()
        if key != self._alert_key:
            saved = self.db.meta(cursor_key)
            start = int(saved) if saved is not None and int(saved) <= engine.end else engine.end
            at = engine.committed_after(start - 1).head(1)
            if not len(at) or int(at.index[0].timestamp()) != start:
                start, at = engine.end, engine.committed_after(engine.end - 1)
            self._rule_states = {}
            for rule in settings.rules:
                self._rule_states[rule.key] = initial_state(
                    rule, rule.bound(settings.threshold), float(self._rule_series(rule, at, params.pair)[0]),
                    self.alerts.last_fired(rule.key, settings.pair_label))
            self._alert_key, self._alert_cursor = key, start
        df = engine.committed_after(self._alert_cursor)
        if not len(df):
            return
        seconds = df.index.as_unit("s").asi8
        found = []
        for rule in settings.rules:
            values = self._rule_series(rule, df, params.pair)
            bound = rule.bound(settings.threshold)
            fired, self._rule_states[rule.key] = evaluate_rule(rule, bound, values, seconds,
                                                               self._rule_states[rule.key])
            found += [Alert(int(seconds[i]), rule.label(params.pair, settings.threshold), rule.key, rule.kind,
                            settings.pair_label, float(values[i]), bound, float(df["zscore"].iloc[i]),
                            float(df["spread"].iloc[i])) for i in fired]
        self._alert_cursor = int(seconds[-1])
        self.db.set_meta(cursor_key, str(self._alert_cursor))
        if found:
            self._deliver(self.alerts.add(sorted(found, key=lambda a: a.second)), settings)

    @staticmethod
    def _rule_series(rule, df: pd.DataFrame, pair) -> np.ndarray:
        if rule.is_z:
            return df["zscore"].to_numpy()
        if rule.kind.startswith("spread"):
            return df["spread"].to_numpy()
        return df[pair[0] if rule.leg == "A" else pair[1]].to_numpy()

    def _deliver(self, alerts: list[Alert], settings: UserSettings) -> None:
        """Alerts this process logged first: to the log (pages toast them) and the webhook."""
        for alert in alerts:
            log.info("alert %s: %s at %s, value %.6g", settings.pair_label, alert.rule, iso_utc(alert.second),
                     alert.value)
            if settings.webhook_url:
                self.notifier.send(settings.webhook_url, alert)

    def send_test_alert(self) -> Alert:
        """A test alert through every channel: the log (so every open page toasts it) and the
        webhook when one is set."""
        settings = self.settings
        now = self.clock()
        latest = self.latest()
        z, spread = (float(latest["zscore"]), float(latest["spread"])) if latest is not None else (None, None)
        alert = Alert(int(now), "Test alert", f"{TEST_RULE}:{time.time_ns()}", TEST_RULE, settings.pair_label,
                      z if z is not None else float("nan"), settings.threshold, z, spread)
        [alert] = self.alerts.add([alert])
        self._deliver([alert], settings)
        return alert

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
            "legs": self._legs(last, now, settings),
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
            "worker_pid": os.getpid(),
            "settings_error": self.settings_store.load_error,
            "rest_host_note": self.url_note,
            "webhook": self.notifier.status(),
        }

    def _legs(self, last: dict, now: float, settings: UserSettings) -> dict:
        """Per symbol: live, stale (with its age), or disconnected (with the reason)."""
        legs = {}
        for sym, tick in last.items():
            age = None if tick is None else round(now - tick.epoch, 3)
            late = age is None or age > self.stale_after_s(settings)
            if sym in self._halted:
                state, reason = "disconnected", self._halted[sym]
            elif late and self.last_error is not None:
                state, reason = "disconnected", self.last_error["message"]
            else:
                state, reason = ("waiting" if age is None else "stale" if late else "live"), None
            legs[sym] = {"state": state, "age_s": age, "reason": reason,
                         "last_tick_utc": None if tick is None else iso_utc(tick.epoch)}
        return legs

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
