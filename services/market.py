"""The one façade every page and API route talks to: `MarketService`.

A tab's tick calls `tick()` once: it refreshes (at most one upstream poll per poll interval
across tabs, workers and the collector, waiting for a poll already in flight in this process so
that the tick shows it), then returns a `Snapshot` — the settings read once, the market's time
and the status — that every read of that tick goes through. Readers only read.

Behind the façade, each piece has one job:
- `SourceLink` (services/link.py): the source, the REST host, 451 fallbacks, halted symbols;
- `PollGate` (services/gate.py): the poll slot, the in-flight flag, the Retry-After window,
  the ticks shared between processes;
- `Ingestion` (services/ingest.py): hydrate, backfill, persist, prune;
- `Analyses` (services/analysis.py): watermarked engines, frames, statistics, backtest, and the
  single-flight memo for work every tab shares;
- `AlertEvaluator` (services/alerting.py): the rules, once per final bar;
- `MarketStatus` (services/status.py): what the navbar and /api/health say.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from flask import current_app

from services import metrics
from services.alerting import AlertEvaluator
from services.alerts import Alert, AlertLog
from services.analysis import WARM_WAIT_S, Analyses, lateness_s
from services.auth import require_editor
from services.backtest import BacktestParams
from services.binance import INVALID_SYMBOL, BinanceAPIError, BinanceClient, BinanceError, BinanceRateLimited
from services.cache import cache_state
from services.db import FAILURES, Database
from services.engine import Params
from services.gate import PollGate
from services.ingest import DB_MAY_FAIL, Ingestion
from services.link import SourceLink
from services.netguard import WebhookPolicy
from services.notify import WebhookNotifier
from services.scanner import DetachedScans, Scanner, ScanRequest, parse_request
from services.settings import (
    AppConfig,
    SettingsError,
    SettingsStore,
    UserSettings,
    pair_name,
    parse_symbol,
    validate,
)
from services.sources import BinanceSource, Tick, iso_utc
from services.stats import DEFAULT_CORR_WINDOW
from services.status import LegStatus, MarketStatus, UpstreamError
from services.store import PriceStore
from services.stream import StreamRelay

log = logging.getLogger(__name__)

LEG_STATES = ("live", "waiting", "stale", "disconnected")  # better to worse
REFRESH_WAIT_S = 1.0  # a tick waits this long at most for a poll already in flight in this process
SHARED_TICKS_WAIT_S = 0.5  # and this long for the ticks another process is polling this interval
STREAM_SINK_WAIT_S = 0.2  # the stream's trades wait this long for a refresh in this process, then try again
STATUS_READ_S = 0.5  # the status a tab shows reads the shared Retry-After window at most this often


@dataclass(frozen=True)
class Snapshot:
    """One tick's consistent view: the settings read once, the market's time after the refresh,
    and the status at that time."""

    settings: UserSettings
    now: float
    status: MarketStatus
    params: Params  # the saved analysis parameters
    late_s: float  # the allowed lateness: bars older than this are final
    seq: int  # the store's write count: what is shared between tabs is keyed by it
    ticks: int  # the store's tick count: what shows the last ticks (cards, tick table) is keyed by it

    @property
    def now_s(self) -> int:
        return int(self.now)


def watched_symbols(book) -> tuple[str, ...]:
    """Every symbol of the watched pairs, once each, in watchlist order."""
    return tuple(dict.fromkeys(sym for s in book for sym in s.pair))


class _Unread(Exception):
    """The database could not be read: a shared value that is not kept."""


class MarketService:
    def __init__(self, config: AppConfig, cache, clock=None, source=None):
        """`clock` defaults to the source's own (wall time, or replay time for a replay)."""
        self.config = config
        self.cache = cache
        self._clock = clock
        self.db = Database(config.data_dir, config.database_url)
        self.settings_store = SettingsStore(self.db, legacy_dir=config.data_dir)
        with contextlib.suppress(*FAILURES):  # a damaged file (shown as such): the saved pair
            self.settings_store.seed(config.pairs)
        self.store = PriceStore(config.history_s)
        self.alerts = AlertLog(self.db)
        self.notifier = WebhookNotifier(self.db, WebhookPolicy(config.allow_private_webhooks, config.host, config.port))
        self.worker_id = f"{os.getpid()}-{id(self)}"
        self.relay: StreamRelay | None = None  # --source stream: this process's part in the one connection
        self.link = SourceLink(config, cache, self.settings_store, clock=clock, source=source, on_open=self._opened)
        self.gate = PollGate(cache, self.worker_id)
        self.ingestion = Ingestion(self.store, self.db, self.link, config.history_s, config.ffill_s)
        self.analyses = Analyses(self.store, config.history_s, self.ingestion.ffill_s)
        self.alerting = AlertEvaluator(self.db, self.alerts, self.notifier)
        self._refresh_lock = threading.Lock()
        self.last_error: UpstreamError | None = None
        self.upstream_polls = 0
        self._analysed = None  # (second, store write, watchlist, pair shown) of the last analysis pass
        self._pinned: tuple[int, tuple[int, int]] = (-1, (0, 0))  # a streaming store's counts this second
        self.scans = DetachedScans(lambda: self.scanner(own_connection=True), cache)

    # --- source and settings -------------------------------------------------------------
    def source(self):
        """The source, opened on the first call (`auto` may probe the network)."""
        return self.link.source()

    def _opened(self, source) -> None:
        """A stream source shares one connection with the deployment's other processes."""
        if source.kind == "stream":
            self.relay = source.relay = StreamRelay(
                self.cache,
                self.worker_id,
                source,
                watched=lambda: watched_symbols(self.watchlist()),
                newest=self._newest_live_second,
                sink=self._streamed,
                save=self.ingestion.save,
                may_fetch=lambda: not self.gate.rate_limited_until(self.clock()),
                on_error=self._record_error,
            )
            self.relay.start()

    def _newest_live_second(self) -> int | None:
        ticks = [self.store.last_tick(s) for s in watched_symbols(self.watchlist())]
        return max((int(t.epoch) for t in ticks if t is not None), default=None)

    def close(self) -> None:
        """Before the process exits: a stream connection held here is handed on at once."""
        if self.relay is not None:
            self.relay.stop()

    def rest_host_in_use(self) -> str | None:
        """The REST host polled now (None when the source is not Binance)."""
        return self.link.host_in_use()

    def clock(self) -> float:
        """Now, in UTC epoch seconds: the market's time (a replay's recorded time)."""
        return self._clock() if self._clock else self.source().now()

    def current_settings(self) -> UserSettings:
        """The first watched pair's settings (read at most once a second per process)."""
        return self.settings_store.current()

    def watchlist(self) -> tuple[UserSettings, ...]:
        """Every watched pair's settings, in order."""
        return self.settings_store.watchlist()

    def add_pair(self, a, b) -> UserSettings:
        """Watch another pair: both symbols trading, different, not watched yet, at most
        MAX_PAIRS in all. Raises SettingsError with the reason; nothing changes then."""
        require_editor()
        known = set(self.symbols())
        pair = (parse_symbol(a, known, "Symbol A"), parse_symbol(b, known, "Symbol B"))
        if pair[0] == pair[1]:
            raise SettingsError(f"The two symbols must differ (both are {pair[0]})")
        return self.settings_store.add_pair(pair)

    def remove_pair(self, pair) -> None:
        """Stop watching `pair`; its history stays until it ages out. KeyError if not watched,
        SettingsError for the last pair."""
        require_editor()
        self.settings_store.remove_pair(pair)

    def params(self, settings: UserSettings, **overrides) -> Params:
        """The analysis parameters of `settings`, with overrides."""
        base = {
            "pair": settings.pair,
            "tf": settings.timeframe,
            "hedge": settings.hedge,
            "window": settings.window,
            "log": settings.log_prices,
        }
        return Params(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    def symbols(self) -> list[str]:
        """Tradable symbols (exchangeInfo, cached for an hour); the current pair if unknown."""
        cached = self.link.cached_symbols()
        if cached:
            return cached
        pair = sorted(set(self.current_settings().pair))
        if self.gate.rate_limited_until(self.clock()):
            return pair
        try:
            return self.link.fetch_symbols()
        except BinanceError as exc:
            self._record_error(exc)
            return pair

    def settings_for(self, pair) -> UserSettings:
        """The settings of the watched `pair` (a page's ?pair=), else of the first pair."""
        return (self.settings_store.for_pair(pair) if pair else None) or self.current_settings()

    def save_settings(self, raw: dict, pair=None) -> UserSettings:
        """Validate a (partial) settings change against the source's symbols and persist it. A
        newly picked symbol must be trading; the pair already watched may stay even if one leg
        stopped (so that rules, webhook or host can still be changed).

        Raises SettingsError with a user-facing message (NotAnEditor for a viewer); nothing is
        saved then.
        """
        require_editor()
        current = self.settings_for(pair)
        merged = {**asdict(current), **raw}
        symbols = set(self.symbols()) | set(current.pair)
        settings = validate(merged, symbols, self.config.rest_hosts())
        if settings.webhook_url != current.webhook_url:
            self.notifier.policy.check(settings.webhook_url)  # resolves the host: only when it changes
        return self.settings_store.save(settings, pair=current.pair)

    # --- the tick --------------------------------------------------------------------------
    def tick(self, pair=None) -> Snapshot:
        """Refresh, then the snapshot every read of this tick goes through: of the watched `pair`
        (a page's ?pair=), else of the first pair."""
        settings = self.settings_for(pair)
        self.refresh(settings)
        return self.snapshot(settings)

    def snapshot(self, settings: UserSettings | None = None) -> Snapshot:
        """The current view, without refreshing."""
        settings = settings or self.current_settings()
        now = self.clock()
        params = self.params(settings)
        self.analyses.live(params)  # what the pages read is the pinned engine (built once, shared)
        return Snapshot(
            settings,
            now,
            self._status(settings, now),
            params,
            lateness_s(settings.poll_interval_s),
            *self._counts(now),
        )

    def _counts(self, now: float) -> tuple[int, int]:
        """The store's write and tick counts, which key what the tabs share. A streaming source
        changes the store many times a second: its counts are pinned at the second's first
        snapshot, so the tabs of that second share one computation, as with one poll a second
        (the push shows the trades in between)."""
        counts = (self.store.write_seq, self.store.tick_seq)
        if self.relay is None:
            return counts
        if self._pinned[0] != int(now):
            self._pinned = (int(now), counts)
        return self._pinned[1]

    def refresh(self, settings: UserSettings | None = None) -> bool:
        """Poll upstream if this poll interval has not been polled yet; True if this call did.

        Never raises: a database or ingest error is recorded and shown like an upstream error.
        """
        if not self._refresh_lock.acquire(timeout=REFRESH_WAIT_S):
            return False  # a poll in this process is still waiting for the exchange: show what is in
        try:
            return self._refresh(settings or self.current_settings())
        except Exception as exc:
            log.exception("refresh failed")
            metrics.REFRESH_ERRORS.inc()
            self.last_error = UpstreamError(
                f"Internal error while refreshing ({exc.__class__.__name__}: {exc}); see the server log",
                None,
                None,
                iso_utc(time.time()),
            )
            return False
        finally:
            self._refresh_lock.release()

    def _refresh(self, settings: UserSettings) -> bool:
        """One poll of every watched symbol (one request), then every pair's analysis and rules.
        `settings` is the pair the caller shows: its new engine is waited for (briefly)."""
        book = self.watchlist()
        symbols = watched_symbols(book)
        self.ingestion.retain(symbols)
        if self.link.follow(settings, symbols):
            self.last_error = None
        now = self.clock()
        polled = self._poll(settings, book, symbols, now)
        for ticks in self.gate.collect(now, settings.poll_interval_s, SHARED_TICKS_WAIT_S):
            self._ingest(ticks, book, symbols, now, persist_raw=False)  # the polling process stored them
        late = lateness_s(settings.poll_interval_s)
        analysed = (int(now), self._counts(now)[0], book, settings.pair)
        if analysed == self._analysed:
            return polled  # another tab of this second: nothing new for any pair's analysis
        self.analyses.keep_live({s.pair for s in book})
        self.alerting.keep({s.pair for s in book})
        for pair_settings in book:
            engine = self.analyses.live(self.params(pair_settings))
            # New parameters: their history is built off the ingest path, and alerts are evaluated
            # from the refresh that finds it built (from the saved cursor: no bar is missed).
            wait = WARM_WAIT_S if pair_settings.pair == settings.pair else 0.0
            if engine.end is not None or self.analyses.warm(engine, int(now), late, wait):
                engine.update(int(now), late)
                with DB_MAY_FAIL:  # the alert log can't be written: Database.fault says so on every page
                    self.alerting.evaluate(pair_settings, engine)
        with DB_MAY_FAIL:
            self.alerting.save_cursors()
        self._analysed = analysed
        self.ingestion.prune_if_due(now)
        return polled

    def _poll(self, settings: UserSettings, book, symbols: tuple[str, ...], now: float) -> bool:
        if self.relay is not None and self.relay.live():
            return False  # the deployment's stream brings the trades: no slot to claim, nothing to ask
        key = self.gate.claim(symbols, settings.poll_interval_s, now)
        if key is None:
            return False
        if self.link.recheck_due(now):
            self._check_trading(symbols, now)
        pollable = self.link.pollable(symbols)
        if not pollable or not self.gate.begin_flight():
            return False  # nothing to poll, or another process's poll still waits for its answer
        started = time.perf_counter()
        try:
            ticks = self.source().poll(pollable)
        except BinanceError as exc:
            self._record_error(exc)
            if isinstance(exc, BinanceAPIError) and exc.code == INVALID_SYMBOL:
                self._check_trading(symbols, now)
            return True
        finally:
            self.gate.end_flight()
            self.upstream_polls += 1
            metrics.POLL_SECONDS.observe(time.perf_counter() - started)
        self.last_error = None
        self.gate.publish(key, ticks, settings.poll_interval_s)
        self._ingest(ticks, book, symbols, now, persist_raw=True)
        return True

    def _ingest(self, ticks: list[Tick], book, symbols, now: float, persist_raw: bool) -> None:
        span = max(self.ingestion.backfill_span(s.window, self.params(s).tf_s) for s in book)
        self.ingestion.ingest(
            ticks,
            symbols,
            span,
            now,
            persist_raw,
            may_fetch=lambda: not self.gate.rate_limited_until(self.clock()),
            on_error=self._record_error,
        )

    def _streamed(self, ticks: list[Tick], fill: bool) -> bool:
        """The stream's trades (or a hole's fill) that this process's relay received on its own
        connection or read from the holder's, into memory like a poll's (the holder's relay
        writes them to the database). False when a refresh is busy (the relay tries again)."""
        if not self._refresh_lock.acquire(timeout=STREAM_SINK_WAIT_S):
            return False
        try:
            book = self.watchlist()
            symbols = watched_symbols(book)
            if fill:
                self.ingestion.fill(ticks, symbols)
            else:
                self._ingest(ticks, book, symbols, self.clock(), persist_raw=False)
        finally:
            self._refresh_lock.release()
        return True

    def _check_trading(self, symbols, now: float) -> None:
        try:
            self.link.check_trading(symbols, now)
        except BinanceError as exc:
            self._record_error(exc)

    def _record_error(self, exc: BinanceError) -> None:
        now = self.clock()
        self.last_error = UpstreamError(exc.message, exc.status, exc.code, iso_utc(now))
        if exc.status == 451:
            self.link.leave_restricted_host()
        if isinstance(exc, BinanceRateLimited):
            self.gate.open_rate_limit_window(exc.status, exc.retry_after, now)

    # --- status ----------------------------------------------------------------------------
    def stale_after_s(self, settings: UserSettings) -> float:
        return max(5.0, 3 * settings.poll_interval_s, 2.0 * self.source().interval_s)

    def _status(self, settings: UserSettings, now: float) -> MarketStatus:
        """Source, freshness per leg and the last error: the navbar and /api/health."""
        stale_after = self.stale_after_s(settings)
        legs = tuple(self._leg(sym, self.store.last_tick(sym), now, stale_after) for sym in settings.pair)
        ticks = [self.store.last_tick(s) for s in settings.pair]
        oldest = None if any(t is None for t in ticks) else min(ticks, key=lambda t: t.epoch)
        age = None if oldest is None else round(now - oldest.epoch, 3)
        if age is None:
            state = "starting" if self.last_error is None else "error"
        else:
            state = "ok" if age <= stale_after else "stale"
        source = self.source()
        limited = self.gate.rate_limited_until(now, max_age_s=STATUS_READ_S)
        return MarketStatus(
            state=state,
            source=source.kind,
            source_label=source.label,
            simulated=source.simulated,
            source_note=self.link.source_note,
            symbols=settings.pair,
            legs=legs,
            last_tick_utc=None if oldest is None else iso_utc(oldest.epoch),
            age_s=age,
            stale_after_s=stale_after,
            last_error=self.last_error,
            rate_limited_until_utc=None if limited is None else iso_utc(limited),
            rate_limit_resumes_in_s=None if limited is None else round(limited - now, 1),
            upstream_polls=self.upstream_polls,
            worker_pid=os.getpid(),
            settings_error=self.settings_store.load_error,
            rest_host_note=self.link.url_note,
            webhook=self.notifier.status(),
            database_error=self.db.fault,
            database=self._database_state(),
            stream=self.relay.state() if self.relay is not None else None,
            shared_cache=cache_state(self.cache),
        )

    def _database_state(self) -> dict:
        history = self.ingestion.history()
        backlogs = [self.alerting.unlogged, *((history.unwritten_bars, history.unwritten_ticks) if history else ())]
        return {**self.db.state(), "unwritten": {b.kind: len(b.rows) for b in backlogs}}

    def newest_alert(self, snap: Snapshot) -> int:
        """The newest alert's id (any process's), read once per second and store write for every
        tab: a tick asks the log for new alerts only when there are some."""
        return self.shared(("newest-alert", snap.now_s, snap.seq), self.alerts.last_id)

    def alerts_since(self, snap: Snapshot, seen: int) -> list[Alert]:
        """Alerts logged after the id `seen`, newest first: read once per newest alert for every
        tab that has seen the same one (the tabs of one browser, or of one desk, mostly have)."""
        return self.shared(("alerts-since", seen, self.newest_alert(snap)), lambda: self.alerts.since(seen))

    def alert_marks(self, snap: Snapshot, range_s: int, since_s: int) -> list[Alert]:
        """The shown pair's alerts at bars from `since_s` on, newest first: the z chart's markers
        for a range of `range_s`. Read once for every tab and chart of that range, and again
        only when an alert has been logged, not each second: as the range's start moves on, the
        older ones are dropped here. A read that failed shows none and is not kept."""
        pair = snap.settings.pair_label

        def read() -> tuple[int, list[Alert]] | None:
            alerts = self.alerts.read_log(pair, since_s=since_s)
            return None if alerts is None else (since_s, alerts)

        got = self._read_once(("alert-marks", pair, range_s, self.newest_alert(snap)), read)
        if got is not None and since_s < got[0]:  # the range starts before that read (a clock set back)
            got = read()
        return [] if got is None else [a for a in got[1] if a.second >= since_s]

    def pair_rows(self, snap: Snapshot) -> list[tuple[UserSettings, dict]]:
        """Every watched pair's settings and figures (`pair_row`), computed once per second and
        store write for every tab (the overview) and API client (/api/pairs)."""
        book = self.watchlist()
        newest = self.newest_alert(snap)
        return self.shared(
            ("pairs", snap.now_s, snap.seq, book), lambda: [(s, self.pair_row(s, snap.now, newest)) for s in book]
        )

    def pair_row(self, settings: UserSettings, now: float, newest_alert: int) -> dict:
        """A watched pair's parameters and live figures, as /api/pairs (and the overview) give
        them: the legs' prices, β, spread, z, half-life, ADF p-value, its state (the worse leg:
        live, waiting, stale or disconnected) and its alerts today (UTC). A pair whose analysis
        is still being built has its parameters and state, and no figures yet."""
        params = self.params(settings)
        late = lateness_s(settings.poll_interval_s)
        built = self.analyses.live(params).end is not None
        latest = self.analyses.latest(params, int(now), late, self.source().interval_s) if built else None
        stats = self.analyses.statistics(params, DEFAULT_CORR_WINDOW, now, late) if built else {}
        stale_after = self.stale_after_s(settings)
        legs = [self._leg(sym, self.store.last_tick(sym), now, stale_after).state for sym in settings.pair]
        midnight = int(now // 86_400 * 86_400)

        def figure(value) -> float | None:
            return float(value) if value is not None and math.isfinite(value) else None

        return {
            "pair": pair_name(settings.pair),
            "a": settings.symbol_a,
            "b": settings.symbol_b,
            "hedge": settings.hedge,
            "tf": settings.timeframe,
            "window": settings.window,
            "threshold": settings.threshold,
            "log": settings.log_prices,
            **{
                key: figure(None if latest is None else latest[col])
                for key, col in (
                    ("price_a", settings.symbol_a),
                    ("price_b", settings.symbol_b),
                    ("beta", "beta"),
                    ("spread", "spread"),
                    ("zscore", "zscore"),
                )
            },
            "half_life_bars": figure(stats.get("half_life_bars")),
            "adf_pvalue": figure((stats.get("adf") or {}).get("pvalue")),
            "state": max(legs, key=LEG_STATES.index),
            "alerts_today": self.alert_count(settings.pair_label, newest_alert, since_s=midnight),
        }

    def alert_count(self, pair_label: str, newest_alert: int, since_s: int | None = None) -> int | None:
        """`AlertLog.count`, once for every tab, and again only when an alert has been logged
        (`newest_alert` changed). None when the log can't be read, which is not kept: the next
        tick asks again."""
        return self._read_once(
            ("alert-count", pair_label, since_s, newest_alert), lambda: self.alerts.count(pair_label, since_s=since_s)
        )

    def _read_once(self, key, read):
        """`shared(key, read)` for a database read that returns None when the database can't be
        read: that None is returned, not kept (the next caller reads again)."""

        def value():
            got = read()
            if got is None:
                raise _Unread
            return got

        try:
            return self.shared(key, value)
        except _Unread:
            return None

    def _leg(self, sym: str, tick: Tick | None, now: float, stale_after: float) -> LegStatus:
        """Live, stale (with its age), or disconnected (with the reason)."""
        age = None if tick is None else round(now - tick.epoch, 3)
        late = age is None or age > stale_after
        if sym in self.link.halted:
            state, reason = "disconnected", self.link.halted[sym]
        elif late and self.last_error is not None:
            state, reason = "disconnected", self.last_error.message
        else:
            state, reason = ("waiting" if age is None else "stale" if late else "live"), None
        return LegStatus(sym, state, age, reason, None if tick is None else iso_utc(tick.epoch))

    # --- what pages and the API read (through a snapshot) -----------------------------------
    def frame(self, snap: Snapshot, start_s: int, end_s: int, params: Params | None = None) -> pd.DataFrame:
        """Bars with open time in [start_s, end_s]: the two legs' prices, β, α, spread, rolling
        mean, std and z (final bars, then the provisional ones as they stand)."""
        return self.analyses.frame(params or snap.params, start_s, end_s, snap.now_s, snap.late_s)

    def arrays(self, snap: Snapshot, start_s: int, end_s: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`frame`'s bars as (open times, {column: values}) with the engine's column names ("a" and
        "b" for the legs' prices): a few bars without building a DataFrame."""
        return self.analyses.arrays(snap.params, start_s, end_s, snap.now_s, snap.late_s)

    def ohlc(self, snap: Snapshot, start_s: int, end_s: int, params: Params | None = None) -> pd.DataFrame | None:
        return self.analyses.ohlc(params or snap.params, start_s, end_s)

    def latest(self, snap: Snapshot, params: Params | None = None) -> pd.Series | None:
        return self.analyses.latest(params or snap.params, snap.now_s, snap.late_s, self.source().interval_s)

    def revision(self, snap: Snapshot, params: Params | None = None) -> str:
        return self.analyses.revision(params or snap.params, snap.now_s, snap.late_s)

    def final_until(self, snap: Snapshot, params: Params | None = None) -> int:
        """Open time of the last final bar: the chart's points up to it never change again."""
        return self.analyses.final_until(params or snap.params, snap.now_s, snap.late_s)

    def statistics(self, snap: Snapshot, corr_window: int, params: Params | None = None) -> dict:
        return self.analyses.statistics(params or snap.params, corr_window, snap.now, snap.late_s)

    def backtest(self, snap: Snapshot, bt: BacktestParams, params: Params | None = None) -> dict:
        return self.analyses.backtest(params or snap.params, bt, snap.now_s, snap.late_s)

    def shared(self, key, compute):
        """A value every tab shares, computed once (single flight); see `Analyses.shared`."""
        return self.analyses.shared.get(key, compute)

    def leg_summary(self, snap: Snapshot, symbol: str) -> dict | None:
        """A symbol's last tick, its age, whether it is stale, and the first price of the rolling
        window (window bars of the timeframe) for the change over it; None before any tick."""
        last = self.store.last_tick(symbol)
        if last is None:
            return None
        window_s = snap.settings.window * snap.params.tf_s
        prices = self.store.prices(symbol, snap.now_s - window_s + 1, snap.now_s)
        valid = prices[~np.isnan(prices)]
        age = snap.now - last.epoch
        return {
            "last": last,
            "age_s": age,
            "stale": age > snap.status.stale_after_s,
            "window_s": window_s,
            "first_price": float(valid[0]) if len(valid) else None,
        }

    def recent_ticks(self, snap: Snapshot, limit: int = 50, symbols=None) -> list[Tick]:
        return self.store.recent_ticks(symbols or snap.settings.pair, limit)

    # --- the scanner -----------------------------------------------------------------------
    def scanner(self, own_connection: bool = False) -> Scanner:
        """A scanner of the source. `own_connection`: in a process of its own (a forked scan), a
        Binance source talks through a new session, never the parent's pooled sockets."""
        source = self.source()
        client = getattr(source, "client", None)
        if own_connection and client is not None:
            source = BinanceSource(BinanceClient(client.base_url, clock=client.clock))
        return Scanner(source, self.cache, self.gate, clock=self.clock)

    def scan_request(self, args) -> ScanRequest:
        """A scan request, its typed symbols checked against the trading ones. Raises ScanError."""
        return parse_request(args, set(self.symbols()) if args.get("symbols") else None)

    def send_test_alert(self) -> Alert:
        """A test alert through every channel (log, toasts on every page, webhook)."""
        require_editor()
        snap = self.snapshot()
        return self.alerting.send_test(snap.settings, snap.now, self.latest(snap))


def current_market() -> MarketService:
    """The MarketService of the Flask app serving this request (set by `app.create_app`)."""
    return current_app.extensions["market"]
