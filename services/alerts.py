"""Z-score alerts: fired once per crossing of the threshold, evaluated once per closed bucket.

The service feeds `AlertMonitor.evaluate` the z-scores of buckets it has not evaluated yet, in
time order, so an alert never depends on how many tabs are open or which page they show.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from services.analytics import crossings


@dataclass(frozen=True)
class Alert:
    time: datetime  # UTC start of the bucket where |z| crossed
    pair: str
    zscore: float
    spread: float
    threshold: float

    @property
    def direction(self) -> str:
        return "above" if self.zscore > 0 else "below"

    def as_row(self) -> dict:
        return {"time_utc": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "pair": self.pair,
                "direction": f"{self.direction} +{self.threshold:g}" if self.zscore > 0
                else f"{self.direction} −{self.threshold:g}",
                "zscore": round(self.zscore, 3), "spread": round(self.spread, 6)}


class AlertMonitor:
    """Crossing state plus a bounded log (newest last)."""

    def __init__(self, max_log: int = 1_000):
        self._log: deque[Alert] = deque(maxlen=max_log)
        self._outside: bool | None = None
        self._lock = threading.Lock()

    def reset(self, last_z: float | None = None, threshold: float | None = None) -> None:
        """Start a new crossing state (after a pair, window or threshold change) without firing."""
        with self._lock:
            known = last_z is not None and threshold is not None and not np.isnan(last_z)
            self._outside = bool(abs(last_z) >= threshold) if known else None

    def evaluate(self, times, z, spread, threshold: float, pair: str) -> list[Alert]:
        with self._lock:
            idx, self._outside = crossings(z, threshold, self._outside)
            new = [Alert(times[i].to_pydatetime(), pair, float(z[i]), float(spread[i]), threshold) for i in idx]
            self._log.extend(new)
        return new

    def log(self, pair: str | None = None) -> list[Alert]:
        """Alerts, newest first, for one pair or all."""
        with self._lock:
            return [a for a in reversed(self._log) if pair is None or a.pair == pair]

    def clear(self) -> None:
        with self._lock:
            self._log.clear()
