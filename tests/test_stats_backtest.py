"""ADF, half-life, correlation, timeframes and the backtest against references and hand computation."""

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import adfuller

from fake_binance import recorded_closes
from services import bars, stats
from services.backtest import backtest


@pytest.fixture(scope="module")
def day():
    return recorded_closes("BTCUSDT").to_numpy(), recorded_closes("ETHUSDT").to_numpy()


def ols_residual(y, x):
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    return y - fit.predict(sm.add_constant(x))


def test_adf_on_the_ols_spread_equals_statsmodels(day):
    btc, eth = day
    from services.hedge import expanding_ols

    beta, alpha, _ = expanding_ols(eth, btc)
    ours = stats.adf(btc - (beta[-1] * eth + alpha[-1]))
    ref = adfuller(ols_residual(btc, eth), autolag="AIC", result_object=True)
    assert ours["statistic"] == pytest.approx(ref.statistic, rel=1e-9)
    assert ours["pvalue"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert set(ours["critical"]) == {"1%", "5%", "10%"}
    assert ours["verdict"] in ("mean-reverting at 5 %", "not mean-reverting at 5 %")


def adf_cases():
    """Series of every length and shape the app meets: walks, AR(1), drifting I(2), prices on a
    tick grid, the recorded day, and a zig-zag whose design is rank-deficient."""
    rng = np.random.default_rng(0)
    for n in (20, 31, 120, 900, 2_000, 5_000):
        e = rng.standard_normal(n)
        ar = np.zeros(n)
        for t in range(1, n):
            ar[t] = 0.9 * ar[t - 1] + e[t]
        yield f"walk-{n}", np.cumsum(e)
        yield f"ar1-{n}", ar
        yield f"i2-{n}", np.cumsum(np.cumsum(e)) * 0.01 + e
        yield f"ticks-{n}", np.round(np.cumsum(e) * 3) / 3
    btc, eth = recorded_closes("BTCUSDT").to_numpy(), recorded_closes("ETHUSDT").to_numpy()
    yield "recorded-spread", btc - 27.0 * eth
    yield "recorded-btc", btc
    yield "zigzag", np.tile([0.0, 1.0], 40) + np.arange(80) * 1e-3


@pytest.mark.parametrize(("name", "series"), list(adf_cases()))
def test_adf_picks_the_lag_statsmodels_picks_and_gives_its_numbers(name, series):
    """The lag search reads the nested regressions off one QR: it must choose what statsmodels'
    own search chooses, and the test at that lag is statsmodels' (equal to the last bit)."""
    ref = adfuller(series, autolag="AIC", result_object=True)
    ours = stats.adf(series)
    assert (ours["lags"], ours["nobs"]) == (ref.lags, ref.nobs)
    assert (ours["statistic"], ours["pvalue"]) == (ref.statistic, ref.pvalue)
    assert ours["critical"] == {k: float(v) for k, v in ref.critical_values.items()}


def test_adf_verdicts_on_known_series():
    rng = np.random.default_rng(0)
    ar = np.zeros(2_000)
    for t in range(1, 2_000):
        ar[t] = 0.8 * ar[t - 1] + rng.normal()
    walk = np.cumsum(rng.normal(size=2_000))
    assert stats.adf(ar)["mean_reverting_5pct"] is True
    assert stats.adf(walk)["mean_reverting_5pct"] is False
    assert stats.adf(np.full(100, 3.0)) is None and stats.adf([1.0, 2.0]) is None


def test_half_life_equals_statsmodels_ar1(day):
    btc, eth = day
    s = ols_residual(btc, eth)
    fit = sm.OLS(np.diff(s), sm.add_constant(s[:-1])).fit()
    assert stats.half_life(s) == pytest.approx(-math.log(2) / fit.params[1], rel=1e-9)


def test_half_life_of_a_known_ar1():
    rng = np.random.default_rng(1)
    phi = 0.5 ** (1 / 20)  # half-life 20 bars
    x = np.zeros(50_000)
    for t in range(1, len(x)):
        x[t] = phi * x[t - 1] + rng.normal()
    assert stats.half_life(x) == pytest.approx(20, rel=0.1)
    assert stats.half_life(np.arange(10.0) ** 2) == math.inf


def test_rolling_corr_equals_corrcoef_per_window(day):
    btc, eth = day
    got = stats.rolling_return_corr(btc, eth, 30)
    ra, rb = np.diff(np.log(btc)), np.diff(np.log(eth))
    assert np.isnan(got[:30]).all()
    for t in range(30, len(btc), 53):
        assert got[t] == pytest.approx(np.corrcoef(ra[t - 30 : t], rb[t - 30 : t])[0, 1], rel=1e-9)


def test_bars_are_labelled_by_open_time_and_keep_gaps():
    start = 1_761_091_200 - 30  # 23:59:30, mid-bar
    prices = np.arange(150, dtype=float)
    prices[40:100] = np.nan  # 00:00:10 .. 00:01:09 missing
    times, o, h, lo, c = bars.to_bars(start, prices, 60, ohlc=True)
    assert list(times) == [1_761_091_140, 1_761_091_200, 1_761_091_260]
    assert (o[0], h[0], lo[0], c[0]) == (0, 29, 0, 29)
    assert (o[1], c[1]) == (30, 39)
    assert (o[2], h[2], lo[2], c[2]) == (100, 149, 100, 149)
    t2, c2 = bars.to_bars(0, np.array([np.nan] * 120 + [5.0]), 60)
    assert np.isnan(c2[:2]).all() and c2[2] == 5.0 and list(t2) == [0, 60, 120]


def test_bars_match_pandas_resample(day):
    btc = day[0]
    seconds = np.repeat(btc, 60)[:7_200] + np.tile(np.arange(60), 120) * 0.01
    start = 1_761_091_200
    times, close = bars.to_bars(start, seconds, 300)
    idx = pd.to_datetime(np.arange(start, start + 7_200), unit="s", utc=True)
    ref = pd.Series(seconds, index=idx).resample("5min", label="left", closed="left").last()
    np.testing.assert_array_equal(close, ref.to_numpy())
    assert (pd.to_datetime(times, unit="s", utc=True) == ref.index).all()


def test_backtest_by_hand():
    times = np.arange(8)
    a = np.array([100, 100, 100, 101, 102, 100, 100, 100.0])
    b = np.full(8, 50.0)
    z = np.array([0, 2.5, 1.0, -0.5, 0.3, 0.0, -2.4, -2.0])
    res = backtest(times, a, b, np.ones(8), z, entry=2.0, exit_level=0.0, stop=4.0, cost_bps=10)
    t1, t2 = res["trades"]
    # short spread filled at bar 2 (100, 50); exit signalled at bar 3 (z ≤ 0), filled at bar 4 (102, 50)
    expected = -2 / 150 - 0.001 - 0.001 * 152 / 150
    assert t1["side"] == "short spread" and t1["entry_time"] == 2 and t1["exit_time"] == 4
    assert t1["ret"] == pytest.approx(expected)
    assert t2["side"] == "long spread" and t2["entry_time"] == 7 and t2["exit_reason"] == "open"
    assert res["equity"][4] == pytest.approx(1 + expected)
    m = res["metrics"]
    assert m["hit_rate"] == 0.0 and m["trades"] == 2
    assert m["max_drawdown"] == pytest.approx(-(expected - 0.001), rel=1e-9)


def test_backtest_stop_and_no_lookahead():
    z = np.array([0, -2.1, -3.0, -4.5, -1.0])
    a, b = np.array([10, 10, 9, 8, 12.0]), np.full(5, 5.0)
    res = backtest(np.arange(5), a, b, np.ones(5), z, entry=2.0, stop=4.0)
    (tr,) = res["trades"]
    assert (tr["entry_time"], tr["exit_time"], tr["exit_reason"]) == (2, 4, "stop")
    assert tr["ret"] == pytest.approx((12 - 9) / 14)
    z2 = z.copy()
    z2[4] = 99.0
    a2 = a.copy()
    a2[4] = 1.0
    res2 = backtest(np.arange(5), a2, b, np.ones(5), z2, entry=2.0, stop=4.0)
    np.testing.assert_array_equal(res["equity"][:4], res2["equity"][:4])
