"""Analytics against hand computation and independent references (statistics module, plain loops)."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("window", [2, 3, 30, 200])
def test_rolling_zscore_of_a_few_bars_is_exact_and_equals_the_long_run_computation(window, monkeypatch):
    """A tick's few bars are computed window by window in numpy (exact); long runs with pandas'
    rolling sums (centred). On the recorded spread, with a gap, they agree to 1e-9."""
    btc, eth = recorded_closes("BTCUSDT").to_numpy(), recorded_closes("ETHUSDT").to_numpy()
    sp = analytics.spread(btc, eth)[300 : 300 + 2 * window + 100]
    sp[window + 20] = np.nan
    assert len(sp) * window <= analytics.SMALL_WORK
    small = analytics.rolling_zscore(sp, window)
    for t in range(window - 1, len(sp), 7):
        win = sp[t - window + 1 : t + 1]
        if not np.isnan(win).any():
            assert small[0][t] == pytest.approx(statistics.fmean(win), rel=1e-14)
            assert small[1][t] == pytest.approx(statistics.stdev(win), rel=1e-12)
    monkeypatch.setattr(analytics, "SMALL_WORK", 0)
    long_run = analytics.rolling_zscore(sp, window)
    for got, want in zip(small, long_run):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    window=st.integers(2, 120),
    extra=st.integers(0, analytics.FEW_WINDOWS - 1),
    level=st.floats(-1e5, 1e5),
    scale=st.floats(1e-3, 1e4),
    gap=st.one_of(st.none(), st.integers(0, 200)),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_ticks_few_windows_equal_the_strided_computation_bit_for_bit(window, extra, level, scale, gap, seed):
    """A tick's bars (fewer than FEW_WINDOWS windows) are summed one window at a time: the same
    numbers, to the last bit, as the mean and std of the strided windows."""
    x = level + scale * np.random.default_rng(seed).standard_normal(window + extra)
    if gap is not None:
        x[gap % len(x)] = np.nan
    mean, std, _ = analytics.rolling_zscore(x, window)
    windows = np.lib.stride_tricks.sliding_window_view(x, window)
    np.testing.assert_array_equal(mean[window - 1 :], windows.mean(axis=1))
    flat = std[window - 1 :] == 0  # a window flat to rounding is set to 0 on both paths
    np.testing.assert_array_equal(std[window - 1 :][~flat], windows.std(axis=1, ddof=1)[~flat])


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), max_size=60),
    limit=st.integers(0, 6),
)
def test_forward_fill_equals_pandas_ffill_with_a_limit(values, limit):
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    expected = pd.Series(x, dtype=float).ffill(limit=limit).to_numpy() if limit else x
    np.testing.assert_array_equal(analytics.forward_fill(x, limit), expected)
