"""Shared work, done once: a small memo whose concurrent misses wait for the one computation.

Whatever is the same for every tab (a chart's tail for one second, a whole figure for a range,
the statistics of a revision) is asked for by key. The first caller computes it; callers that
arrive while it runs wait for that result instead of computing it again (single flight); later
callers get it from the memo until it is pushed out (LRU, bounded by count) or expires.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class _Flight:
    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None


class SingleFlight:
    def __init__(self, max_entries: int = 256, ttl_s: float = 120.0, clock=time.monotonic):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._memo: OrderedDict = OrderedDict()  # key -> (expires, value)
        self._flights: dict = {}  # key -> the computation running now
        self.computed = 0  # values computed (not served from the memo): for tests and benchmarks

    def get(self, key, compute):
        """The value for `key`: memoised, or computed once however many threads ask at once. A
        failed computation raises in every caller that waited for it, and is not memoised."""
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None and hit[0] > self._clock():
                self._memo.move_to_end(key)
                return hit[1]
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.error is None:
                    self.computed += 1
                    self._memo[key] = (self._clock() + self.ttl_s, flight.value)
                    while len(self._memo) > self.max_entries:
                        self._memo.popitem(last=False)
            flight.done.set()
        return flight.value
