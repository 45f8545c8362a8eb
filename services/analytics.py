"""Pure analytics on aligned 1-second price arrays: no I/O, no clocks, no state.

Every output at bucket t depends on inputs at or before t only (no look-ahead), so computing
over a slice that starts `window - 1 + ffill_limit` buckets early gives exactly the values a
computation over the whole history gives. The engine (services/engine.py) relies on that to
update per tick in O(window) instead of O(history).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# A window whose sample std is below this fraction of its mean level is treated as flat (std 0):
# the z-score would be noise divided by rounding error.
FLAT_STD_RTOL = 1e-12
SMALL_WORK = 100_000  # values summed over all windows below which rolling_zscore skips pandas
FEW_WINDOWS = 8  # up to this many windows (a tick's bars) are summed one by one: no strided view to build


def forward_fill(values: np.ndarray, limit: int) -> np.ndarray:
    """Carry the last price forward over at most `limit` empty seconds.

    Causal, like pandas' `ffill(limit=...)`: the first `limit` seconds of a longer gap are
    filled (at that moment nobody knows the gap will be long); the rest stays NaN, so a long
    gap shows as a break, never as an invented flat line or an interpolation. (numpy, not
    pandas: it runs on a few bars many times a second.)
    """
    x = np.array(values, dtype=float)
    if limit <= 0 or not len(x):
        return x
    pos = np.arange(len(x))
    last = np.where(np.isnan(x), -1, pos)
    np.maximum.accumulate(last, out=last)  # index of the last price at or before each second
    fill = (last >= 0) & (pos - last <= limit)
    return np.where(fill, x[np.maximum(last, 0)], np.nan)


def spread(a: np.ndarray, b: np.ndarray, beta: float = 1.0, alpha: float = 0.0) -> np.ndarray:
    """spread_t = A_t − (β·B_t + α). β = 1, α = 0 is the plain price difference."""
    return np.asarray(a, float) - (beta * np.asarray(b, float) + alpha)


def rolling_zscore(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling mean, sample std (ddof=1) and z = (x − mean) / std over `window` buckets.

    NaN until the window holds `window` valid values (a NaN inside the window makes the window
    incomplete) and wherever the std is zero. The few bars of a tick (at most SMALL_WORK values
    in all windows) are computed window by window in numpy, exactly, without pandas' fixed cost;
    longer runs use pandas' rolling sums, O(n), on centred values. They agree to about 1e-10
    relative, except that a window flat after a move is exactly flat only window by window (the
    rolling sums leave a std of about 1e-6 there, and z ~ 0 instead of undefined).
    """
    x = np.asarray(x, dtype=float)
    if len(x) * window <= SMALL_WORK:
        mean, std = np.full(len(x), np.nan), np.full(len(x), np.nan)
        if window <= len(x) < window + FEW_WINDOWS:
            for end in range(window, len(x) + 1):  # what windows.mean and .std(ddof=1) compute, per window
                w = x[end - window : end]
                m = w.sum() / window
                d = w - m
                mean[end - 1], std[end - 1] = m, np.sqrt((d * d).sum() / (window - 1))
        elif len(x) >= window:
            windows = sliding_window_view(x, window)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean[window - 1 :] = windows.mean(axis=1)
                std[window - 1 :] = windows.std(axis=1, ddof=1)
    else:  # centred: the rolling sums' rounding grows with the values' size (a spread of 1e5)
        finite = x[np.isfinite(x)]
        centre = float(finite.mean()) if len(finite) else 0.0
        roll = pd.Series(x - centre).rolling(window, min_periods=window)
        mean = roll.mean().to_numpy() + centre
        std = roll.std(ddof=1).to_numpy()
    flat = std <= FLAT_STD_RTOL * np.maximum(np.abs(mean), 1.0)
    std = np.where(flat, 0.0, std)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(flat, np.nan, (x - mean) / std)
    return mean, std, z
