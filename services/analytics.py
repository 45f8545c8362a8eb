"""Pure analytics on aligned 1-second price arrays: no I/O, no clocks, no state.

Every output at bucket t depends on inputs at or before t only (no look-ahead), so computing
over a slice that starts `window - 1 + ffill_limit` buckets early gives exactly the values a
computation over the whole history gives. The engine (services/engine.py) relies on that to
update per tick in O(window) instead of O(history).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A window whose sample std is below this fraction of its mean level is treated as flat (std 0):
# the z-score would be noise divided by rounding error.
FLAT_STD_RTOL = 1e-12


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
    incomplete) and wherever the std is zero.
    """
    s = pd.Series(x, dtype=float)
    roll = s.rolling(window, min_periods=window)
    mean = roll.mean().to_numpy()
    std = roll.std(ddof=1).to_numpy()
    flat = std <= FLAT_STD_RTOL * np.maximum(np.abs(mean), 1.0)
    std = np.where(flat, 0.0, std)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(flat, np.nan, (s.to_numpy() - mean) / std)
    return mean, std, z
