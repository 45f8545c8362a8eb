"""The poll gate: at most one upstream call per poll interval, across tabs, workers and the collector.

- The slot: each interval's key is claimed in the shared cache with an atomic `add`
  (`services.cache.AtomicFileSystemCache` by default; Redis's SET NX works too). One process
  wins it; the others collect the winner's ticks from the same cache.
- The in-flight flag: never two polls waiting for answers at once, whatever the slots say.
- The Retry-After window of a 429/418: no request at all, from anyone, until it ends.
"""

from __future__ import annotations

import math
import time
from collections import deque

RATE_LIMIT_KEY = "upstream:rate-limited-until"
IN_FLIGHT_KEY = "upstream:poll-in-flight"
IN_FLIGHT_MAX_S = 20  # longer than any poll with its retries; frees the flag of a worker that died mid-poll
DEFAULT_RETRY_AFTER_S = {429: 60, 418: 120}  # when the answer carries no Retry-After
SHARED_WAIT_STEP_S = 0.02


class PollGate:
    def __init__(self, cache, worker_id: str):
        self.cache = cache
        self.worker_id = worker_id
        self._last_slot: int | None = None
        self._pending: deque[tuple[int, str]] = deque(maxlen=8)  # (slot, key) another process polls
        self._limit: tuple[float, float | None] = (-math.inf, None)  # (when read, the window's end)

    @staticmethod
    def _timeout(poll_interval_s: float) -> int:
        return max(2, math.ceil(poll_interval_s * 4))

    def claim(self, pair, poll_interval_s: float, now: float) -> str | None:
        """The key of this interval's slot if this process won it (it must poll now), else None.
        A slot another process won is remembered, to collect its ticks."""
        slot = int(now // poll_interval_s)
        if slot == self._last_slot:
            return None
        self._last_slot = slot
        if self.rate_limited_until(now):
            return None  # no request at all inside the exchange's Retry-After window
        key = f"poll:{','.join(pair)}:{poll_interval_s}:{slot}"
        if self.cache.add(key, self.worker_id, timeout=self._timeout(poll_interval_s)):
            return key
        self._pending.append((slot, key))
        return None

    def begin_flight(self) -> bool:
        """Take the in-flight flag; False while another process's poll still waits for its answer."""
        return bool(self.cache.add(IN_FLIGHT_KEY, self.worker_id, timeout=IN_FLIGHT_MAX_S))

    def end_flight(self) -> None:
        self.cache.delete(IN_FLIGHT_KEY)

    def publish(self, key: str, ticks, poll_interval_s: float) -> None:
        """Share a won slot's ticks with the processes that lost it."""
        self.cache.set(f"ticks:{key}", ticks, timeout=self._timeout(poll_interval_s))

    def collect(self, now: float, poll_interval_s: float, wait_s: float) -> list:
        """Ticks other processes polled for the slots this one lost, oldest first. For the current
        slot, wait up to `wait_s` for them to land, so a tab shows this interval's poll."""
        current = int(now // poll_interval_s)
        out = []
        for slot, key in list(self._pending):
            ticks = self.cache.get(f"ticks:{key}")
            deadline = time.monotonic() + (wait_s if slot == current else 0.0)
            while ticks is None and time.monotonic() < deadline:
                time.sleep(SHARED_WAIT_STEP_S)
                ticks = self.cache.get(f"ticks:{key}")
            if ticks is not None:
                self._pending.remove((slot, key))
                out.append(ticks)
        return out

    def rate_limited_until(self, now: float, max_age_s: float = 0.0) -> float | None:
        """End of the exchange's Retry-After window (429/418), or None outside one. Read from the
        shared cache, unless this process read it less than `max_age_s` ago: what a tab shows
        may be that old; what decides a request is read fresh (the default)."""
        read_at, until = self._limit
        if time.monotonic() - read_at >= max_age_s:
            until = self.cache.get(RATE_LIMIT_KEY)
            self._limit = (time.monotonic(), until)
        return until if until is not None and until > now else None

    def open_rate_limit_window(self, status: int, retry_after: float | None, now: float) -> None:
        """Shared through the cache: every tab and worker stays quiet until it ends."""
        wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_S.get(status, 60)
        self.cache.set(RATE_LIMIT_KEY, now + wait, timeout=math.ceil(wait) + 1)
        self._limit = (time.monotonic(), now + wait)
