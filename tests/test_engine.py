"""The incremental engine equals a full recomputation, never looks ahead, and keeps buckets in
place; property tests with hypothesis."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import analytics, bars, hedge
from services.engine import PairEngine, Params
from services.sources import Tick, utc_from_epoch
from services.store import PriceStore

T0 = 1_761_091_200
PAIR = ("AUSDT", "BUSDT")


def synthetic(n, seed, gaps=True):
    rng = np.random.default_rng(seed)
    f = np.cumsum(rng.normal(0, 1e-4, n))
    a = 1_000 * np.exp(f * 1.2 + rng.normal(0, 2e-4, n))
    b = 50 * np.exp(f + rng.normal(0, 2e-4, n))
    if gaps:
        a[rng.random(n) < 0.05] = np.nan
        b[200:215] = np.nan
    return a, b


def fill(store, a, b, start=T0, upto=None):
    upto = len(a) if upto is None else upto
    ticks = [
        Tick(sym, float(p), utc_from_epoch(start + i + 0.5))
        for sym, xs in zip(PAIR, (a, b))
        for i, p in enumerate(xs[:upto])
        if not np.isnan(p)
    ]
    store.add_ticks(ticks)


@pytest.mark.parametrize("method", hedge.METHODS)
@pytest.mark.parametrize("tf", ["1s", "1m"])
def test_incremental_equals_full_recompute(method, tf):
    n = 1_500
    a, b = synthetic(n, 1)
    params = Params(PAIR, tf=tf, hedge=method, window=20, log=method == "ols")
    live_store = PriceStore(span_s=4_000)
    live = PairEngine(params, live_store, ffill_s=3, span_s=3_000)
    for s in range(0, n, 7):  # ticks arrive, the engine updates as time passes
        fill_range = slice(s, min(s + 7, n))
        live_store.add_ticks(
            [
                Tick(sym, float(p), utc_from_epoch(T0 + i + 0.5))
                for sym, xs in zip(PAIR, (a, b))
                for i, p in zip(range(fill_range.start, fill_range.stop), xs[fill_range])
                if not np.isnan(p)
            ]
        )
        live.frame(T0, T0 + s + 7, T0 + s + 7)
    now = T0 + n
    full_store = PriceStore(span_s=4_000)
    fill(full_store, a, b)
    full = PairEngine(params, full_store, ffill_s=3, span_s=3_000)
    x, y = live.frame(T0, now, now), full.frame(T0, now, now)
    assert live.resets == 0, "ticks arriving in order never force a recomputation"
    assert list(x.index) == list(y.index)
    np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("method", hedge.METHODS)
def test_ticks_late_within_the_watermark_update_bars_in_place_without_a_restart(method):
    """Each second's tick lands only after the engine was read at the next second (up to 2 s
    late): bars inside the lateness window are provisional, corrected in place, and the engine
    never restarts. A tick later than the watermark does restart it, once."""
    n, late = 600, 2.0
    a, b = synthetic(n, 4, gaps=False)
    params = Params(PAIR, hedge=method, window=20)
    store = PriceStore(span_s=2_000)
    fill(store, a, b, upto=100)
    engine = PairEngine(params, store, ffill_s=3, span_s=1_000)
    seen = {}
    for s in range(100, n):
        now = T0 + s + 1
        # the reader looks before the tick of second s lands; then it lands, inside the window
        seen[s] = engine.frame(T0 + s, T0 + s, now, late)["zscore"].iloc[0]
        store.add_ticks([Tick(sym, float(xs[s]), utc_from_epoch(T0 + s + 0.5)) for sym, xs in zip(PAIR, (a, b))])
    assert engine.resets == 0
    full_store = PriceStore(span_s=2_000)
    fill(full_store, a, b)
    now = T0 + n + 5
    x = engine.frame(T0, now, now, late)
    y = PairEngine(params, full_store, ffill_s=3, span_s=1_000).frame(T0, now, now, late)
    np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)
    assert sum(not np.isclose(seen[s], y["zscore"].iloc[s], equal_nan=True) for s in seen) > 100, (
        "the provisional values drawn before the late ticks were different: they were corrected"
    )
    store.add_ticks([Tick(PAIR[0], 1.0, utc_from_epoch(now - 10.5))])  # older than the watermark
    engine.frame(T0, now, now, late)
    assert engine.resets == 1


def test_a_long_run_keeps_the_newest_bars_of_the_span_exactly():
    """Many times the span, updated second by second: the final bars kept are the newest ones of
    the span, with the same values a fresh engine computes (a window-based hedge)."""
    n, span = 2_000, 300
    a, b = synthetic(n, 6, gaps=False)
    params = Params(PAIR, hedge="rolling-ols", window=20)
    store = PriceStore(span_s=span + 50)
    engine = PairEngine(params, store, ffill_s=3, span_s=span)
    for s in range(0, n, 3):
        store.add_ticks(
            [
                Tick(sym, float(xs[i]), utc_from_epoch(T0 + i + 0.5))
                for sym, xs in zip(PAIR, (a, b))
                for i in range(s, min(s + 3, n))
            ]
        )
        engine.frame(T0 + s, T0 + s + 3, T0 + s + 3)
    kept = engine.committed_after(None)
    now = engine.end + 1
    assert len(kept) == engine.capacity and engine.end == T0 + n, "the newest bars, as many as the span holds"
    fresh = PairEngine(params, store, ffill_s=3, span_s=span).frame(now - 200, now - 1, now)
    np.testing.assert_allclose(kept.tail(200).to_numpy(), fresh.to_numpy(), rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(hedge.METHODS),
    tf=st.sampled_from(["1s", "1m"]),
    cut=st.integers(min_value=100, max_value=1_100),
    shock=st.floats(0.5, 50.0),
    log=st.booleans(),
)
def test_changing_data_after_t_leaves_every_output_up_to_t_unchanged(method, tf, cut, shock, log):
    n = 1_200
    a, b = synthetic(n, 2)
    a2, b2 = a.copy(), b.copy()
    a2[cut:] *= 1 + shock / 100
    b2[cut + 3 :] = np.nan
    params = Params(PAIR, tf=tf, hedge=method, window=15, log=log)
    frames = []
    for xa, xb in ((a, b), (a2, b2)):
        store = PriceStore(span_s=2_000)
        fill(store, xa, xb)
        frames.append(PairEngine(params, store, ffill_s=3, span_s=1_500).frame(T0, T0 + n, T0 + n))
    last_bar_before = bars.bar_open(T0 + cut, params.tf_s) - params.tf_s  # bars that closed before `cut`
    x, y = (f[f.index.map(lambda t: t.timestamp() <= last_bar_before)] for f in frames)
    assert len(x) > 0
    np.testing.assert_array_equal(x.to_numpy(), y.to_numpy())


@settings(max_examples=50, deadline=None)
@given(
    scale=st.floats(-1e4, 1e4).filter(lambda v: abs(v) > 1e-3), shift=st.floats(-1e6, 1e6), seed=st.integers(0, 10_000)
)
def test_z_is_invariant_under_an_affine_transform_of_the_spread(scale, shift, seed):
    s = np.random.default_rng(seed).normal(size=300).cumsum()
    _, _, z = analytics.rolling_zscore(s, 30)
    _, _, z2 = analytics.rolling_zscore(scale * s + shift, 30)
    np.testing.assert_allclose(z2, np.sign(scale) * z, rtol=1e-6, atol=1e-6, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(T0 - 10_000, T0 + 10_000),
    n=st.integers(1, 400),
    tf=st.sampled_from(list(bars.TIMEFRAMES.values())),
    seed=st.integers(0, 1_000),
    missing=st.floats(0.0, 0.95),
)
def test_gaps_never_shift_buckets(start, n, tf, seed, missing):
    rng = np.random.default_rng(seed)
    prices = rng.normal(100, 1, n)
    prices[rng.random(n) < missing] = np.nan
    times, close = bars.to_bars(start, prices, tf)
    assert times[0] == start // tf * tf and (np.diff(times) == tf).all()
    for k, t in enumerate(times):
        lo, hi = max(t, start) - start, min(t + tf, start + n) - start
        valid = prices[lo:hi][~np.isnan(prices[lo:hi])]
        assert (np.isnan(close[k]) and len(valid) == 0) or close[k] == valid[-1]


def test_a_backfilled_hole_forces_a_recomputation():
    a, b = synthetic(600, 3, gaps=False)
    store = PriceStore(span_s=2_000)
    fill(store, a, b, upto=300)
    engine = PairEngine(Params(PAIR, window=20), store, ffill_s=3, span_s=1_000)
    engine.frame(T0, T0 + 400, T0 + 400)  # seconds 300..400 committed as a gap
    fill(store, a, b)  # the hole arrives late (backfill)
    after = engine.frame(T0, T0 + 400, T0 + 400)
    assert engine.resets == 1
    assert not after["zscore"].iloc[350:].isna().any()
