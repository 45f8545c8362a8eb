"""Which bars of a long range to draw: at most about `MAX_POINTS` per trace, spikes kept.

tsdownsample's MinMaxLTTB picks, per series, the points that keep its shape (extremes included)
and keeps NaNs, so a gap still shows as a break. The rows drawn are the union of every series'
picks plus the rows that must stay (alert markers), so each trace's points are exact values of
real bars: a point on screen still equals the API for its bar. A zoom window is drawn at full
resolution (or downsampled on its own when it alone holds too many bars).
"""

from __future__ import annotations

import numpy as np
from tsdownsample import NaNMinMaxLTTBDownsampler

MAX_POINTS = 2_000


def _picks(values: np.ndarray, n_out: int) -> np.ndarray:
    n = len(values)
    if n <= n_out:
        return np.arange(n)
    y = np.ascontiguousarray(values, dtype=np.float64)
    picks = NaNMinMaxLTTBDownsampler().downsample(np.arange(n, dtype=np.int64), y, n_out=n_out)
    return picks.astype(np.int64)


def rows_to_draw(columns, max_points: int = MAX_POINTS, must=(), dense: slice | None = None) -> np.ndarray | None:
    """Sorted row indices to draw, or None when every row fits. `columns` are the series of one
    chart (equal lengths); `must` rows are always drawn; rows in `dense` (a zoom window) get
    their own budget of `max_points`, the rest of the range half that in all."""
    columns = [np.asarray(c, float) for c in columns]
    n = len(columns[0])
    if n <= max_points:
        return None
    parts = [np.asarray(must, dtype=np.int64)]
    if dense is None:
        spans = [(0, n, max_points)]
    else:
        lo, hi, _ = dense.indices(n)
        outside = max(lo + n - hi, 1)
        spans = [
            (lo, hi, max_points),
            (0, lo, max_points // 2 * lo // outside),
            (hi, n, max_points // 2 * (n - hi) // outside),
        ]
    for start, stop, budget in spans:
        if stop - start <= 0:
            continue
        share = max((budget - 2) // len(columns), 4)  # the two ends below are in the budget
        parts += [start + _picks(c[start:stop], share) for c in columns]
        parts.append(np.array([start, stop - 1]))  # the span's ends: the range and the window stay whole
    return np.unique(np.concatenate(parts))
