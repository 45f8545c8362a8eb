"""Analytics against hand computation and independent references (statistics module, plain loops)."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from fake_binance import recorded_closes

from services import analytics


def test_forward_fill_is_causal_and_limited():
    x = np.array([1.0, np.nan, np.nan, 2.0, np.nan, np.nan, np.nan, np.nan, np.nan, 3.0])
    out = analytics.forward_fill(x, 3)
    expected = [1, 1, 1, 2, 2, 2, 2, np.nan, np.nan, 3]
    np.testing.assert_array_equal(out, expected)


def test_forward_fill_zero_limit_keeps_gaps():
    x = np.array([1.0, np.nan, 2.0])
    np.testing.assert_array_equal(analytics.forward_fill(x, 0), x)


def test_spread_is_a_minus_beta_b():
    np.testing.assert_allclose(analytics.spread([10.0, 12.0], [3.0, 5.0]), [7.0, 7.0])
    np.testing.assert_allclose(analytics.spread([10.0, 12.0], [3.0, 5.0], beta=2.0, alpha=1.0), [3.0, 1.0])


def test_rolling_zscore_by_hand():
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    mean, std, z = analytics.rolling_zscore(x, 3)
    # window [2, 4, 7]: mean 13/3, sample std sqrt(((2-13/3)^2 + (4-13/3)^2 + (7-13/3)^2) / 2)
    m = 13 / 3
    s = math.sqrt(((2 - m) ** 2 + (4 - m) ** 2 + (7 - m) ** 2) / 2)
    assert mean[3] == pytest.approx(m)
    assert std[3] == pytest.approx(s)
    assert z[3] == pytest.approx((7 - m) / s)
    assert np.isnan(z[:2]).all() and np.isnan(mean[:2]).all()


def test_rolling_zscore_nan_when_flat_or_incomplete():
    x = np.array([5.0, 5.0, 5.0, 5.0, 6.0, np.nan, 7.0, 8.0, 9.0])
    _, std, z = analytics.rolling_zscore(x, 3)
    assert std[2] == 0 and np.isnan(z[2]) and np.isnan(z[3])
    assert not np.isnan(z[4])
    assert np.isnan(z[5:8]).all(), "a NaN inside the window leaves z undefined"
    assert not np.isnan(z[8])


def test_rolling_zscore_matches_statistics_module_on_recorded_data():
    btc, eth = recorded_closes("BTCUSDT").to_numpy(), recorded_closes("ETHUSDT").to_numpy()
    sp = analytics.spread(btc, eth)
    window = 30
    mean, std, z = analytics.rolling_zscore(sp, window)
    for t in range(window - 1, len(sp), 37):
        win = list(sp[t - window + 1 : t + 1])
        assert mean[t] == pytest.approx(statistics.fmean(win), rel=1e-12)
        assert std[t] == pytest.approx(statistics.stdev(win), rel=1e-9)
        assert z[t] == pytest.approx((sp[t] - statistics.fmean(win)) / statistics.stdev(win), rel=1e-7, abs=1e-9)


def test_pair_frame_slice_equals_full_history():
    """No look-ahead: computing from `warmup` buckets before start gives the full-history values."""
    rng = np.random.default_rng(3)
    n = 600
    a = 100 + np.cumsum(rng.normal(size=n))
    b = 50 + np.cumsum(rng.normal(size=n))
    a[rng.random(n) < 0.1] = np.nan
    b[200:230] = np.nan
    window, limit = 40, 3
    full = analytics.pair_frame(1_000, a, b, window, limit, ("A", "B"))
    lead = analytics.warmup(window, limit)
    for start in (50, 199, 231, 420):
        part = analytics.pair_frame(
            1_000 + start - lead, a[start - lead :], b[start - lead :], window, limit, ("A", "B")
        )
        pd.testing.assert_frame_equal(part.iloc[lead:], full.iloc[start:])


def test_pair_frame_changing_the_future_leaves_the_past():
    rng = np.random.default_rng(5)
    a, b = 100 + np.cumsum(rng.normal(size=300)), 50 + np.cumsum(rng.normal(size=300))
    before = analytics.pair_frame(0, a, b, 20, 3, ("A", "B"))
    a2 = a.copy()
    a2[150:] += 1_000
    after = analytics.pair_frame(0, a2, b, 20, 3, ("A", "B"))
    pd.testing.assert_frame_equal(before.iloc[:150], after.iloc[:150])


def test_pair_frame_index_is_utc_seconds():
    df = analytics.pair_frame(1_761_091_200, np.ones(3), np.ones(3), 2, 0, ("A", "B"))
    assert str(df.index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp("2025-10-22T00:00:00Z")
    assert (df.index[1:] - df.index[:-1] == pd.Timedelta(seconds=1)).all()
