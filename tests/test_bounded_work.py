"""Work is bounded by what was asked: a request computes its range plus the method's warm-up, a
new parameter set over its budget is a 400, and ingestion never waits for an analysis (before:
`/api/analytics.csv?seconds=60&hedge=robust&window=297` took 78-83 s of CPU with 18 h of history,
and choosing robust made /api/health stale for 75 s)."""

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from cachelib import SimpleCache

from services import analysis
from services.analysis import TooMuchWork, warmup_bars
from services.engine import PairEngine, Params
from services.market import MarketService
from services.settings import AppConfig
from sim_history import a_day_of_sim, fill_history

HOUR = 3_600


@pytest.fixture(scope="module")
def market():
    """The simulation with 3 h of history in memory."""
    m = MarketService(AppConfig(source="sim", data_dir=tempfile.mkdtemp(), history_s=3 * HOUR), SimpleCache())
    fill_history(Path(m.config.data_dir), 3 * HOUR, span_s=3 * HOUR)
    m.tick()
    return m


def whole_history_engine(market, params) -> PairEngine:
    return PairEngine(params, market.store, market.ingestion.ffill_s(), market.config.history_s)


@pytest.mark.parametrize(
    "hedge, window", [("none", 61), ("rolling-ols", 120), ("robust", 297), ("kalman", 60), ("ols", 60)]
)
def test_a_requests_range_equals_the_whole_historys_values_at_the_cost_of_its_warm_up(market, hedge, window):
    snap = market.snapshot()
    params = Params(snap.params.pair, "1s", hedge, window)
    assert params != snap.params, "another parameter set than the saved one"
    start, end = snap.now_s - 600, snap.now_s - 10
    served = market.frame(snap, start, end, params)
    engine = market.analyses.engine(params)
    whole = whole_history_engine(market, params).frame(start, end, snap.now_s, snap.late_s)
    pd.testing.assert_frame_equal(served, whole, rtol=1e-7)  # rolling sums carry rounding from their start
    assert served["zscore"].notna().mean() > 0.9
    computed = len(engine.times)
    if warmup_bars(params) is None:
        assert engine.anchor_s is None, "a recursive method runs over the whole history (O(bars), cheap)"
    else:
        assert computed <= (snap.now_s - start) + warmup_bars(params) + 5, f"{computed} bars computed"


def test_a_new_parameter_set_over_the_budget_is_refused_before_any_work(market, monkeypatch):
    monkeypatch.setattr(analysis, "WORK_BUDGET_US", 100_000)  # 3 h of robust 1 s bars is over it
    snap = market.snapshot()
    params = Params(snap.params.pair, "1s", "robust", 300)
    t0 = time.process_time()
    refusal = r"robust \(window 300\) over 10,800 bars of 1s .* \(at most about 3,333 bars\)"
    with pytest.raises(TooMuchWork, match=refusal):
        market.frame(snap, snap.now_s - 3 * HOUR + 1, snap.now_s, params)
    with pytest.raises(TooMuchWork):
        market.backtest(snap, market_backtest_params(), params)
    assert time.process_time() - t0 < 0.5
    coarse = Params(snap.params.pair, "1m", "robust", 300)
    assert len(market.frame(snap, snap.now_s - 3 * HOUR + 1, snap.now_s, coarse)) == 180, "1m bars: affordable"


def market_backtest_params():
    from services.backtest import parse_params

    return parse_params(2.0, 0.0, 4.0, 5.0)


def test_requests_for_other_parameters_never_evict_the_live_engine(market):
    snap = market.snapshot()
    live = market.analyses.live(snap.params)
    for window in range(30, 40):
        market.frame(snap, snap.now_s - 60, snap.now_s, Params(snap.params.pair, "1s", "rolling-ols", window))
    assert market.analyses.live(snap.params) is live
    assert market.analyses.engine(snap.params) is live


def test_a_new_live_analysis_is_built_off_the_ingest_path(market, monkeypatch):
    """A refresh that meets a new parameter set whose history takes long to build returns at
    once; alerts are evaluated from the refresh that finds it built."""
    built = threading.Event()
    original = PairEngine.update

    def slow_first_build(self, now_s, lateness_s=0):
        if self.end is None and self.p.window == 77:
            time.sleep(2)
            built.set()
        return original(self, now_s, lateness_s)

    monkeypatch.setattr(PairEngine, "update", slow_first_build)
    market.save_settings({"window": 77})
    t0 = time.perf_counter()
    market.refresh()
    assert time.perf_counter() - t0 < 1.0, "the refresh did not wait for the build"
    assert built.wait(5)
    time.sleep(0.1)
    market.refresh()
    assert market.analyses.live(market.snapshot().params).end is not None
    market.save_settings({"window": 60})


@pytest.mark.slow
def test_robust_with_a_day_of_history_answers_in_time_and_health_stays_fresh():
    ages, stop, times = [], threading.Event(), []

    def watch():
        with requests.Session() as s:
            while not stop.is_set():
                r = s.get(f"{base}/health", timeout=30)
                ages.append((r.status_code, r.json()["age_s"]))
                time.sleep(0.2)

    with a_day_of_sim("robust-") as (port, _app):
        base = f"http://127.0.0.1:{port}/api"
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for _ in range(3):  # a new parameter set each time: nothing is reused
                for hedge, window in [("robust", 297), ("rolling-ols", 300), ("kalman", 60)]:
                    t0 = time.perf_counter()
                    r = requests.get(f"{base}/analytics.csv?seconds=60&hedge={hedge}&window={window}", timeout=60)
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and r.text.count("\n") == 61
                    window += 1
                requests.patch(f"{base}/settings", json={"window": 60 + len(times)}, timeout=30)
            whole_day = requests.get(f"{base}/analytics.csv?seconds=86400&hedge=robust&window=297", timeout=60)
            assert whole_day.status_code == 400 and "at most about" in whole_day.json()["error"]
            t0 = time.perf_counter()
            saved = requests.patch(f"{base}/settings", json={"hedge": "robust", "window": 297}, timeout=30)
            assert saved.status_code == 200 and time.perf_counter() - t0 < 2
            time.sleep(8)  # the day of robust bars is built aside meanwhile
            day = requests.get(f"{base}/analytics.csv?seconds=86400", timeout=60)
            assert day.status_code == 200
            z = pd.read_csv(pd.io.common.StringIO(day.text))["zscore"]
            assert z.notna().mean() > 0.99, "the saved robust analysis covers the whole day"
        finally:
            stop.set()  # before the app stops: the watcher asks it until then
            watcher.join()
    assert max(times) <= 2.0, f"slowest request {max(times):.2f} s"
    assert len(ages) > 20 and all(code == 200 and age < 3 for code, age in ages), ages
    assert np.isfinite([age for _, age in ages]).all()


def test_a_larger_windows_deeper_history_is_fetched_aside_within_a_request_budget(fake_binance, tmp_path):
    """Window 5000 at 1 s needs 15,000 s of history: the refresh fetches the last 15 minutes and
    returns; the rest comes in pages on a background thread per leg, at most DEEP_PAGES_PER_S a
    second each, and is stored in one write (one restart of the analysis, not one a page)."""
    from services import ingest

    m = MarketService(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path)), SimpleCache())
    m.save_settings({"window": 5_000})
    t0 = time.perf_counter()
    m.refresh()
    assert time.perf_counter() - t0 < 1.5
    now = int(time.time())
    assert np.isfinite(m.store.prices("BTCUSDT", now - 880, now - 10)).all(), "the last 15 minutes, at once"
    deadline = time.time() + 30
    while not np.isfinite(m.store.prices("BTCUSDT", now - 14_990, now - 14_900)).all():
        assert time.time() < deadline, "the deeper history never arrived"
        m.refresh()
        time.sleep(0.2)
    time.sleep(0.5)  # the other leg's last write
    m.refresh()
    assert m.analyses.live(m.snapshot().params).resets <= 2, "one analysis restart a leg, not one a page"
    calls = np.array(fake_binance.times["/api/v3/klines"])
    assert len(calls) >= 30, "the last 15 minutes and the deeper pages, of both legs"
    per_second = max(np.sum((calls >= t) & (calls < t + 1)) for t in calls)
    assert ingest.DEEP_PAGES_PER_S == 4
    # 4 a leg and the first page of each; the pages start 0.25 s apart on the app's clock, but the
    # fake stamps their arrival, which a loaded machine delays unevenly: one more may fall in a second
    assert per_second <= 11, f"{per_second} kline pages in one second (4 a leg, plus the first page of each)"
