"""Bounded price history in 1-second UTC buckets, plus a short log of raw ticks.

Each symbol has a ring buffer indexed by epoch second modulo its capacity, so memory is fixed by
the configured span (default 24 h) and writing a tick is O(1). A bucket holds the LAST price of
its second: a tick that is older than the one already in its bucket (out of order) loses, a
duplicate changes nothing. Reading returns NaN for seconds that had no tick; forward-filling
short gaps is the reader's choice (`services.analytics.forward_fill`; `PriceStore.filled` does it
once per store write for every reader of the same seconds).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from services.analytics import forward_fill
from services.sources import Tick

NO_SECOND = np.iinfo(np.int64).min
FILLED_KEPT = 256  # filled reads kept per store write (each second's pairs ask for a few spans per symbol)
FILLED_KEPT_MAX_S = 1_024  # longer spans (a whole history, on a start or restart) are not kept


class BucketRing:
    """Last price per UTC second for one symbol, for the most recent `capacity` seconds."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.second = np.full(self.capacity, NO_SECOND, dtype=np.int64)
        self.tick_ns = np.zeros(self.capacity, dtype=np.int64)
        self.price = np.full(self.capacity, np.nan)
        self.latest_s: int | None = None

    def put(self, epoch_s: float, price: float) -> bool:
        """Record a tick; False when it was too old to keep, older than its bucket's tick, or did
        not change its bucket's price (a store write is a change of what readers see)."""
        ns = round(epoch_s * 1e9)
        s = ns // 1_000_000_000
        if self.latest_s is not None and s <= self.latest_s - self.capacity:
            return False
        i = s % self.capacity
        if self.second[i] == s and (ns < self.tick_ns[i] or price == self.price[i]):
            self.tick_ns[i] = max(ns, self.tick_ns[i])  # older than its bucket's tick, or the same price again
            return False
        self.second[i], self.tick_ns[i], self.price[i] = s, ns, price
        if self.latest_s is None or s > self.latest_s:
            self.latest_s = s
        return True

    def window(self, start_s: int, end_s: int) -> np.ndarray:
        """Prices for seconds start_s..end_s inclusive; NaN where the ring holds no such second."""
        n = int(end_s) - int(start_s) + 1
        if n <= 0:
            return np.empty(0)
        secs = np.arange(start_s, end_s + 1, dtype=np.int64)
        idx = secs % self.capacity
        return np.where(self.second[idx] == secs, self.price[idx], np.nan)


class PriceStore:
    """Buckets and raw ticks for every symbol being watched; thread-safe."""

    def __init__(self, span_s: int = 86_400, raw_ticks: int = 5_000):
        self.span_s = int(span_s)
        self.raw_ticks = int(raw_ticks)
        self._rings: dict[str, BucketRing] = {}
        self._ticks: dict[str, deque[Tick]] = {}
        self._lock = threading.Lock()
        self.write_seq = 0  # bumped by every batch that stored something
        self.tick_seq = 0  # bumped by every batch that stored or logged a tick (a new last tick)
        self._writes: deque[tuple[int, int]] = deque(maxlen=4_096)  # (seq, earliest second written)
        self._filled: tuple[int, dict] = (-1, {})  # (write_seq, {(symbol, start, end, limit): prices})

    def add_ticks(self, ticks, raw: bool = True) -> int:
        """Put ticks in their buckets; `raw` ones (live polls, not backfill) also go to the tick log."""
        stored, logged, earliest = 0, 0, None
        with self._lock:
            for t in ticks:
                ring = self._rings.get(t.symbol)
                if ring is None:
                    ring = self._rings[t.symbol] = BucketRing(self.span_s)
                    self._ticks[t.symbol] = deque(maxlen=self.raw_ticks)
                if ring.put(t.epoch, t.price):
                    stored += 1
                    second = int(t.epoch)
                    earliest = second if earliest is None else min(earliest, second)
                log = self._ticks[t.symbol]
                if raw and (not log or log[-1] != t):  # a repeated answer is not a new tick
                    log.append(t)
                    logged += 1
            if stored:
                self.write_seq += 1
                self._writes.append((self.write_seq, earliest))
            if stored or logged:
                self.tick_seq += 1
        return stored

    def earliest_write_since(self, seq: int) -> float | None:
        """The earliest second written by batches after `seq` (None: nothing written since;
        -inf: too long ago to tell, so readers must assume anything changed)."""
        with self._lock:
            if seq >= self.write_seq:
                return None
            if not self._writes or self._writes[0][0] > seq + 1:
                return float("-inf")
            earliest = None
            for s, second in reversed(self._writes):
                if s <= seq:
                    break
                earliest = second if earliest is None else min(earliest, second)
            return earliest

    def latest_second(self, symbol: str) -> int | None:
        ring = self._rings.get(symbol)
        return None if ring is None else ring.latest_s

    def prices(self, symbol: str, start_s: int, end_s: int) -> np.ndarray:
        with self._lock:
            ring = self._rings.get(symbol)
            if ring is None:
                return np.full(max(int(end_s) - int(start_s) + 1, 0), np.nan)
            return ring.window(start_s, end_s)

    def filled(self, symbol: str, start_s: int, end_s: int, limit: int) -> np.ndarray:
        """`prices` for start_s..end_s, a second without a tick taking the last price of the `limit`
        seconds before it (`forward_fill`), read-only. A short span is computed once per store
        write for all its readers (every pair with this leg asks for the same seconds each second)."""
        start_s, end_s, limit = int(start_s), int(end_s), int(limit)
        key = (symbol, start_s, end_s, limit)
        with self._lock:
            seq, kept = self._filled
            if seq != self.write_seq or len(kept) >= FILLED_KEPT:
                kept = {}
                self._filled = (self.write_seq, kept)
            values = kept.get(key)
            if values is not None:
                return values
            ring, lo = self._rings.get(symbol), start_s - limit
            raw = np.full(max(end_s - lo + 1, 0), np.nan) if ring is None else ring.window(lo, end_s)
        values = forward_fill(raw, limit)[limit:]
        values.flags.writeable = False
        if end_s - start_s < FILLED_KEPT_MAX_S:
            with self._lock:
                kept[key] = values  # (a dict of an earlier write is no longer read: harmless)
        return values

    def recent_ticks(self, symbols, limit: int) -> list[Tick]:
        """The newest `limit` raw ticks of `symbols`, newest first."""
        with self._lock:
            merged = [t for s in symbols for t in list(self._ticks.get(s, ()))[-limit:]]
        merged.sort(key=lambda t: t.time, reverse=True)
        return merged[:limit]

    def last_tick(self, symbol: str) -> Tick | None:
        with self._lock:
            log = self._ticks.get(symbol)
            return log[-1] if log else None

    def retain(self, symbols) -> None:
        """Forget symbols no longer watched, so that pair changes cannot grow memory."""
        keep = set(symbols)
        with self._lock:
            for s in [s for s in self._rings if s not in keep]:
                del self._rings[s]
                del self._ticks[s]
                self.write_seq += 1
                self._writes.append((self.write_seq, -(2**62)))

    def nbytes(self) -> int:
        with self._lock:
            return sum(r.second.nbytes + r.tick_ns.nbytes + r.price.nbytes for r in self._rings.values())
