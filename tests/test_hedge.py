"""Hedge ratios against independent references on the recorded BTC/ETH day (../shared/data)."""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from fake_binance import recorded_closes
from services import hedge


@pytest.fixture(scope="module")
def pair():
    """A = BTC, B = ETH 1-minute closes of 2025-10-22 (x is the B leg, y the A leg)."""
    return recorded_closes("ETHUSDT").to_numpy(), recorded_closes("BTCUSDT").to_numpy()


def test_static_ols_equals_statsmodels(pair):
    x, y = pair
    beta, alpha, _ = hedge.expanding_ols(x, y)
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    assert beta[-1] == pytest.approx(fit.params[1], rel=1e-9)
    assert alpha[-1] == pytest.approx(fit.params[0], rel=1e-9)
    mid = sm.OLS(y[:700], sm.add_constant(x[:700])).fit()
    assert beta[699] == pytest.approx(mid.params[1], rel=1e-9), "expanding: bar t uses bars up to t"


def test_static_ols_on_log_prices_equals_statsmodels(pair):
    x, y = np.log(pair[0]), np.log(pair[1])
    beta, alpha, _ = hedge.expanding_ols(x, y)
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    assert beta[-1] == pytest.approx(fit.params[1], rel=1e-9)
    assert alpha[-1] == pytest.approx(fit.params[0], rel=1e-9)


def test_expanding_ols_continues_from_its_state(pair):
    x, y = pair
    whole, _, _ = hedge.expanding_ols(x, y)
    b1, _, state = hedge.expanding_ols(x[:500], y[:500])
    b2, _, _ = hedge.expanding_ols(x[500:], y[500:], state)
    np.testing.assert_allclose(np.concatenate([b1, b2]), whole, rtol=1e-10)


def test_rolling_ols_equals_a_fit_per_window(pair):
    x, y = pair[0].copy(), pair[1].copy()
    x[100:104] = np.nan  # missing bars are excluded, not filled
    window = 45
    beta, alpha = hedge.rolling_ols(x, y, window)
    for t in list(range(0, 60)) + list(range(95, 150)) + list(range(1_000, 1_440, 17)):
        xs, ys = x[max(0, t - window + 1) : t + 1], y[max(0, t - window + 1) : t + 1]
        ok = ~np.isnan(xs)
        if ok.sum() < hedge.min_obs(window):
            assert np.isnan(beta[t])
            continue
        b, a = np.polyfit(xs[ok], ys[ok], 1)
        assert beta[t] == pytest.approx(b, rel=1e-8) and alpha[t] == pytest.approx(a, rel=1e-8, abs=1e-6)


def test_robust_equals_scipy_theilslopes_per_window(pair):
    x, y = pair
    window = 40
    beta, alpha = hedge.theil_sen(x[:200], y[:200], window)
    for t in range(hedge.min_obs(window), 200, 7):
        xs, ys = x[max(0, t - window + 1) : t + 1], y[max(0, t - window + 1) : t + 1]
        ref = stats.theilslopes(ys, xs, method="joint")
        assert beta[t] == pytest.approx(ref.slope, rel=1e-12)
        assert alpha[t] == pytest.approx(ref.intercept, rel=1e-9)


def test_robust_on_a_wide_window_is_within_its_stated_error_of_scipy(pair):
    """w = 300: a fixed sample of ROBUST_PAIRS of the 44,850 slopes. β lies within ±5 percentile
    points of the exact median of all the window's slopes (scipy's Theil–Sen)."""
    x, y = pair
    window = 300
    assert window * (window - 1) // 2 > hedge.ROBUST_PAIRS
    beta, _ = hedge.theil_sen(x, y, window)
    i, j = np.triu_indices(window, k=1)
    ranks = []
    for t in range(window - 1, len(x), 19):
        xs, ys = x[t - window + 1 : t + 1], y[t - window + 1 : t + 1]
        dx = xs[j] - xs[i]
        slopes = (ys[j] - ys[i])[dx != 0] / dx[dx != 0]
        ref = stats.theilslopes(ys, xs, method="joint")
        assert np.median(slopes) == pytest.approx(ref.slope, rel=1e-12)
        lo, hi = np.quantile(slopes, [0.45, 0.55])
        assert lo <= beta[t] <= hi, (t, beta[t], ref.slope)
        ranks.append(np.mean(slopes < beta[t]))
    assert len(ranks) > 50 and abs(np.mean(ranks) - 0.5) < 0.01, "no bias"


def test_robust_shrugs_off_outliers():
    rng = np.random.default_rng(0)
    x = np.linspace(100, 110, 200)
    y = 2.0 * x + 5 + rng.normal(0, 0.01, 200)
    y[::10] += 50  # 10 % gross outliers
    beta, _ = hedge.theil_sen(x, y, 100)
    ols, _ = hedge.rolling_ols(x, y, 100)
    assert abs(beta[-1] - 2.0) < 0.02 < abs(ols[-1] - 2.0)


def kalman_reference(x, y, delta, r):
    """The textbook filter with explicit matrices, on prices normalised by their first value."""
    sx, sy = x[0], y[0]
    theta, P = np.zeros(2), np.eye(2)
    Q = delta / (1 - delta) * np.eye(2)
    prior = []
    for xt, yt in zip(x / sx, y / sy):
        P = P + Q
        prior.append(theta.copy())
        H = np.array([[xt, 1.0]])
        S = H @ P @ H.T + r
        K = P @ H.T @ np.linalg.inv(S)
        theta = theta + (K @ (np.array([yt]) - H @ theta)).ravel()
        P = (np.eye(2) - K @ H) @ P
    prior = np.array(prior)
    return prior[:, 0] * sy / sx, prior[:, 1] * sy


def test_kalman_matches_the_textbook_filter():
    rng = np.random.default_rng(1)
    x = 50 + np.cumsum(rng.normal(0, 0.3, 80))
    y = 1.7 * x + 12 + rng.normal(0, 0.2, 80)
    beta, alpha, _ = hedge.kalman(x, y, delta=1e-4, obs_var=1e-5)
    ref_b, ref_a = kalman_reference(x, y, 1e-4, 1e-5)
    w = hedge.KALMAN_WARMUP
    assert np.isnan(beta[:w]).all()
    np.testing.assert_allclose(beta[w:], ref_b[w:], rtol=1e-9)
    np.testing.assert_allclose(alpha[w:], ref_a[w:], rtol=1e-9, atol=1e-9)


def test_kalman_continues_from_its_state():
    rng = np.random.default_rng(2)
    x = 50 + np.cumsum(rng.normal(0, 0.3, 300))
    y = 1.2 * x + rng.normal(0, 0.2, 300)
    whole, _, _ = hedge.kalman(x, y)
    b1, _, state = hedge.kalman(x[:123], y[:123])
    b2, _, _ = hedge.kalman(x[123:], y[123:], state)
    np.testing.assert_allclose(np.concatenate([b1, b2]), whole, rtol=1e-12, equal_nan=True)


def test_kalman_tracks_a_time_varying_beta():
    rng = np.random.default_rng(3)
    n = 4_000
    true_beta = np.concatenate([np.full(2_000, 0.8), np.linspace(0.8, 1.4, 2_000)])
    x = 100 * (1 + 0.5 * np.sin(2 * np.pi * np.arange(n) / 200)) + rng.normal(0, 0.2, n)
    y = true_beta * x + 20 + rng.normal(0, 0.05, n)
    beta, _, _ = hedge.kalman(x, y)
    err = np.abs(beta - true_beta)
    assert np.nanmedian(err[500:2_000]) < 0.01
    assert np.nanmedian(err[3_000:]) < 0.05, "follows the drift"
    static, _, _ = hedge.expanding_ols(x, y)
    assert np.nanmedian(np.abs(static[3_000:] - true_beta[3_000:])) > 5 * np.nanmedian(err[3_000:]), (
        "not a cumulative regression"
    )


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown hedge method"):
        hedge.hedge("magic", np.ones(3), np.ones(3), 2)
