"""Ingestion: live ticks into the memory store and the database, and the history they need.

Before a symbol's live tick is stored, what the analysis needs and memory lacks is filled: the
history before its first tick (deeper when a longer window or timeframe asks for it) and any hole
since its last tick, from the database first (the collector, another worker, or this process
before a restart recorded it), then from the exchange. The stored history is loaded into memory
once per symbol, and pruned to the configured span every few minutes.

From the exchange, only the last MIN_BACKFILL_S seconds and the holes since the last tick are
fetched before a live tick is stored. Deeper history (a longer window asks for more) is fetched on
a background thread per symbol, newest first, at most DEEP_PAGES_PER_S kline pages a second (weight
2 each: 480 of Binance's 6,000 a minute), and stored in one write at the end (one analysis restart,
not one a page), so a larger window never holds up polling.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from services import metrics
from services.binance import BinanceError
from services.db import FAILURES, Database
from services.history import History
from services.sources import Tick
from services.store import PriceStore

log = logging.getLogger(__name__)

MIN_BACKFILL_S = 900
PRUNE_EVERY_S = 300
DEEP_PAGES_PER_S = 4
DEEP_PAGE_S = 1_000  # seconds of 1 s klines a page (Binance's limit per request)
# A damaged database file (Database.fault shows it on every page) never stops live ticks: what
# can't be read is fetched or left out, what can't be written stays in memory.
DB_MAY_FAIL = contextlib.suppress(*FAILURES)


class Ingestion:
    def __init__(self, store: PriceStore, db: Database, link, history_s: int, ffill_s: int):
        self.store = store
        self.db = db
        self.link = link
        self.history_s = history_s
        self.base_ffill_s = ffill_s
        self._history: History | None = None
        self._hydrated: set[str] = set()
        self._history_from: dict[str, int] = {}  # earliest second backfilled, per symbol
        self._deepening: dict[str, threading.Thread] = {}
        self._last_prune = 0.0

    def ffill_s(self) -> int:
        """Empty seconds a price is carried over: the configured few, or a recording's bar length."""
        return max(self.base_ffill_s, self.link.source().interval_s)

    def history(self) -> History | None:
        """The persisted history of this source (None for a replay: its time restarts)."""
        key = getattr(self.link.source(), "store_key", None)
        if key is None:
            return None
        if self._history is None or self._history.source != key:
            self._history = History(self.db, key, self.history_s)
        return self._history

    def retain(self, pair) -> None:
        """Let go of symbols no longer watched."""
        self.store.retain(pair)
        for sym in [k for k in self._history_from if k not in pair]:
            del self._history_from[sym]
        self._hydrated &= set(pair)

    def backfill_span(self, window: int, tf_s: int) -> int:
        if getattr(self.link.source(), "backfill_all", False):
            return self.history_s
        bars = 3 * window * max(tf_s, self.link.source().interval_s)
        return min(self.history_s, max(MIN_BACKFILL_S, bars + self.ffill_s()))

    def ingest(self, ticks: list[Tick], pair, span_s: int, now: float, persist_raw: bool, may_fetch, on_error) -> None:
        """Store live ticks of `pair`, backfilling first what is missing (`may_fetch()` says
        whether the exchange may be asked now; `on_error` gets what it refused)."""
        fetched = []
        live = [t for t in ticks if t.symbol in pair]
        ffill = self.ffill_s()
        for tick in live:
            self._hydrate(tick.symbol, now)
            second = int(tick.epoch)
            prev = self.store.latest_second(tick.symbol)
            holes = []
            floor = self._history_from.get(tick.symbol)
            deep = self.link.client() is not None  # history costs requests: deeper parts aside
            if prev is None or floor is None:
                near = max(second - span_s, second - MIN_BACKFILL_S) if deep else second - span_s
                holes.append((near, second - 1))
                floor = near
            elif second - prev > ffill + 1:
                holes.append((max(prev + 1, second - self.history_s), second - 1))
            if floor > second - span_s:
                if deep:
                    self._deepen(tick.symbol, second - span_s, floor - 1, ffill, may_fetch, on_error)
                elif prev is not None:
                    holes.append((second - span_s, floor - 1))
            for start, end in holes:
                if not may_fetch():
                    break
                try:
                    fetched.extend(self._fill(tick.symbol, start, end, ffill))
                except BinanceError as exc:
                    on_error(exc)
                    continue
                self._history_from[tick.symbol] = min(start, self._history_from.get(tick.symbol, start))
            if second < int(now):
                metrics.TICKS_LATE.inc()
            self.store.add_ticks([tick])
        metrics.TICKS_INGESTED.inc(len(live))
        history = self.history()
        if history is not None:
            with DB_MAY_FAIL:  # a damaged file (shown as such): the ticks stay in memory
                history.save(fetched + (live if persist_raw else []), live if persist_raw else [])

    def fill(self, ticks: list[Tick], symbols) -> None:
        """The exchange's last trade of seconds already live (a stream's hole): buckets only, not
        the tick log."""
        self.store.add_ticks([t for t in ticks if t.symbol in symbols], raw=False)

    def save(self, trades: list[Tick], filled: list[Tick]) -> None:
        """Live trades (buckets and tick log) and filled seconds (buckets) into the database."""
        history = self.history()
        if history is not None:
            with DB_MAY_FAIL:  # a damaged file (shown as such): they stay in memory
                history.save(trades + filled, trades)

    def _hydrate(self, symbol: str, now: float) -> None:
        """Load a symbol's recorded history into memory, once (at start, or when it is picked).
        A failed read is not marked done: it is tried again on the next tick."""
        history = self.history()
        if symbol in self._hydrated or history is None:
            return
        now = int(now)
        try:
            rows = history.buckets(symbol, now - self.history_s + 1, now)
            recent = history.recent_ticks(symbol, self.store.raw_ticks)
        except FAILURES:  # a damaged file (shown as such): live ticks go on
            return
        self.store.add_ticks(rows, raw=False)
        self.store.add_ticks(recent)
        if rows:
            self._history_from[symbol] = int(rows[0].epoch)
        self._hydrated.add(symbol)

    def _deepen(self, symbol: str, start: int, end: int, ffill: int, may_fetch, on_error) -> None:
        """Fetch [start, end] of `symbol` on a background thread (one per symbol at a time)."""
        running = self._deepening.get(symbol)
        if running is not None and running.is_alive():
            return
        self._deepening[symbol] = thread = threading.Thread(
            target=self._deepen_pages,
            args=(symbol, start, end, ffill, may_fetch, on_error),
            name=f"backfill-{symbol}",
            daemon=True,
        )
        thread.start()

    def _deepen_pages(self, symbol: str, start: int, end: int, ffill: int, may_fetch, on_error) -> None:
        """Gather [start, end] page by page (newest first, paced), then write it in one go: every
        write older than the watermark restarts the analysis, so the pages make one restart, not
        one each. A refusal or an error stops early and writes what was gathered."""
        gathered, fetched, reached = [], [], None
        try:
            for page_end in range(end, start - 1, -DEEP_PAGE_S):
                page_start = max(start, page_end - DEEP_PAGE_S + 1)
                if not may_fetch() or symbol not in self._hydrated:
                    break  # rate-limited, or no longer watched: the next tick starts it again if needed
                started = time.monotonic()
                stored, gaps = self._stored(symbol, page_start, page_end, ffill)
                got = self._fetch(symbol, gaps)
                gathered += stored + got
                fetched += got
                reached = page_start
                time.sleep(max(0.0, 1.0 / DEEP_PAGES_PER_S - (time.monotonic() - started)))
        except BinanceError as exc:
            on_error(exc)
        if reached is None:
            return
        self.store.add_ticks(gathered, raw=False)
        history = self.history()
        if history is not None:
            with DB_MAY_FAIL:
                history.save(fetched, [])
        self._history_from[symbol] = min(reached, self._history_from.get(symbol, reached))

    def _fill(self, symbol: str, start: int, end: int, ffill: int) -> list[Tick]:
        """Put [start, end] of `symbol` in memory: what the database has, and the rest from the
        exchange. Returns what came from the exchange."""
        stored, gaps = self._stored(symbol, start, end, ffill)
        self.store.add_ticks(stored, raw=False)
        fetched = self._fetch(symbol, gaps)
        self.store.add_ticks(fetched, raw=False)
        return fetched

    def _stored(self, symbol: str, start: int, end: int, ffill: int) -> tuple[list[Tick], list[tuple[int, int]]]:
        """What the database has of [start, end], and the gaps (longer than the forward fill) left."""
        history = self.history()
        stored = []
        if history is not None:
            with DB_MAY_FAIL:  # a damaged file: the exchange fills it all
                stored = history.buckets(symbol, start, end)
        if not stored:
            return stored, [(start, end)]
        first, last = int(stored[0].epoch), int(stored[-1].epoch)
        return stored, [(a, b) for a, b in ((start, first - 1), (last + 1, end)) if b - a + 1 > ffill]

    def _fetch(self, symbol: str, gaps) -> list[Tick]:
        """The exchange's 1 s history of `symbol` over `gaps`. Raises BinanceError."""
        return [tick for a, b in gaps for tick in self.link.source().history(symbol, a, b)]

    def prune_if_due(self, now: float) -> None:
        history = self.history()
        if history is not None and now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            with DB_MAY_FAIL:
                history.prune(now)
