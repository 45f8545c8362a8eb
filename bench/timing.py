"""Shared by the benchmarks: the median wall time of a call, in milliseconds."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, runs: int = 1) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)
