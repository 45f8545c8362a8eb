"""Mean-reversion statistics of a spread: ADF test, AR(1) half-life, rolling return correlation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from statsmodels.tsa.stattools import adfuller, lagmat

ADF_MIN_OBS = 20
DEFAULT_CORR_WINDOW = 60  # bars of the legs' return correlation, unless a page asks for another
ADF_MAX_OBS = 5_000  # the last N valid observations; adfuller's lag search is O(N·lags)


def aic_lag(x: np.ndarray) -> int | None:
    """The number of lagged differences `adfuller(x, autolag="AIC")` (constant) picks, found from
    one QR decomposition of its largest design instead of statsmodels' maxlag + 1 separate fits:
    the regressions are nested (each adds the next lag column), so each one's residual sum of
    squares can be read off the QR. Same sample, same AIC (−2 llf + 2 k), same tie-break (the
    fewest columns). None when the design is rank-deficient (statsmodels' own search decides)."""
    n_all = len(x)
    maxlag = min(n_all // 2 - 2, int(np.ceil(12.0 * np.power(n_all / 100.0, 1 / 4.0))))
    if maxlag < 0:
        return None
    xdiff = np.diff(x)
    xdall = lagmat(xdiff[:, None], maxlag, trim="both", original="in")
    n = xdall.shape[0]
    xdall[:, 0] = x[-n - 1 : -1]  # the lagged level, then the lagged differences
    design = np.column_stack([np.ones(n), xdall])
    y = xdiff[-n:]
    q, r = np.linalg.qr(design)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * diag.max():
        return None
    qy = q.T @ y
    rest = float(np.sum((y - q @ qy) ** 2))
    tail = np.cumsum((qy**2)[::-1])[::-1]  # tail[k]: what columns k.. explain
    columns = np.arange(2, design.shape[1] + 1)  # constant and level, then one more lag each
    ssr = rest + np.append(tail[columns[:-1]], 0.0)
    aic = n * (np.log(2 * np.pi) + np.log(ssr / n) + 1) + 2 * columns
    return int(np.argmin(aic))  # argmin keeps the first (fewest columns) of equal values


def adf(spread) -> dict | None:
    """statsmodels' augmented Dickey-Fuller test (constant, lags by AIC) on the valid values.

    None when fewer than ADF_MIN_OBS values. The verdict uses the 5 % level. (On a spread built
    from an estimated hedge ratio, Engle–Granger critical values are somewhat stricter.) The lag
    search is `aic_lag`'s (about 15 times cheaper, the same choice); the test at that lag is
    statsmodels'.
    """
    x = np.asarray(spread, float)
    x = x[~np.isnan(x)][-ADF_MAX_OBS:]
    if len(x) < ADF_MIN_OBS or np.ptp(x) == 0:
        return None
    lag = aic_lag(x)
    if lag is None:
        res = adfuller(x, autolag="AIC", result_object=True)
    else:
        res = adfuller(x, maxlag=lag, autolag=None, result_object=True)
    pvalue = float(res.pvalue)
    return {
        "statistic": float(res.statistic),
        "pvalue": pvalue,
        "lags": int(res.lags),
        "nobs": int(res.nobs),
        "critical": {k: float(v) for k, v in res.critical_values.items()},
        "mean_reverting_5pct": bool(pvalue < 0.05),
        "verdict": "mean-reverting at 5 %" if pvalue < 0.05 else "not mean-reverting at 5 %",
    }


def half_life(spread) -> float:
    """Bars for a deviation to halve, from the AR(1) fit Δs_t = c + λ·s_(t−1): −ln 2 / λ.

    Inf when λ ≥ 0 (no pull back), NaN with fewer than 3 usable pairs.
    """
    s = np.asarray(spread, float)
    prev, diff = s[:-1], np.diff(s)
    ok = ~np.isnan(prev) & ~np.isnan(diff)
    if ok.sum() < 3 or np.ptp(prev[ok]) == 0:
        return math.nan
    lam = np.polyfit(prev[ok], diff[ok], 1)[0]
    return math.inf if lam >= 0 else -math.log(2) / lam


def rolling_return_corr(a, b, window: int) -> np.ndarray:
    """Rolling correlation of the two legs' log returns over `window` bars (NaN until full)."""
    ra = pd.Series(np.log(np.asarray(a, float))).diff()
    rb = pd.Series(np.log(np.asarray(b, float))).diff()
    return ra.rolling(window, min_periods=window).corr(rb).to_numpy()


def summary(spread, a, b, corr_window: int) -> dict:
    """What the statistics panel shows: ADF on the spread, its half-life in bars, and the
    latest rolling correlation of the legs' returns."""
    corr = rolling_return_corr(a, b, corr_window)
    valid = corr[~np.isnan(corr)]
    return {
        "adf": adf(spread),
        "half_life_bars": float(half_life(spread)),
        "return_corr": float(valid[-1]) if len(valid) else math.nan,
        "corr_window": int(corr_window),
        "bars": int(np.sum(~np.isnan(np.asarray(spread, float)))),
    }
