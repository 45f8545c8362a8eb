"""The cointegration scanner: its statistics against statsmodels (on the recorded day and on the
fake exchange's known series), its ranking, its request weight and rate limits, one scan at a
time, and GET /api/scan with its validation."""

import io
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from flask_caching.backends import SimpleCache
from statsmodels.tsa.stattools import coint
from statsmodels.tsa.vector_ar.vecm import coint_johansen

import api
from app import create_app
from fake_binance import RECORDED, SHARED_DATA
from services.binance import BinanceClient
from services.gate import PollGate
from services.replay import ReplaySource
from services.scanner import (
    COLUMNS,
    SLOT_KEY,
    ScanError,
    Scanner,
    ScanRequest,
    ScanSlot,
    WeightBudget,
    parse_request,
    rank,
    run_job,
    score_pair,
)
from services.settings import AppConfig
from services.sources import BinanceSource, SimSource

KLINES = "/api/v3/klines"


def expected_row(a: str, b: str, la: np.ndarray, lb: np.ndarray) -> dict:
    """What statsmodels says about the pair, computed here without the scanner's code."""
    p_ab, p_ba = coint(la, lb)[1], coint(lb, la)[1]
    if p_ba < p_ab:
        a, b, la, lb = b, a, lb, la
    ols = sm.OLS(la, sm.add_constant(lb)).fit()
    beta = ols.params[1]
    spread = la - beta * lb
    ar = sm.OLS(np.diff(spread), sm.add_constant(spread[:-1])).fit()
    johansen = coint_johansen(np.column_stack([la, lb]), 0, 1)
    return {
        "pair": f"{a}-{b}",
        "eg_pvalue": min(p_ab, p_ba),
        "johansen_trace": johansen.lr1[0],
        "johansen_5pct": johansen.lr1[0] > johansen.cvt[0, 1],
        "beta": beta,
        "half_life_bars": -math.log(2) / ar.params[1],
        "return_corr": pd.Series(np.diff(la)).corr(pd.Series(np.diff(lb))),
        "bars": len(la),
    }


def assert_matches(row: dict, want: dict) -> None:
    for name, value in want.items():
        if isinstance(value, float | np.floating):
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        else:
            assert row[name] == value, name


class NoGate:
    def rate_limited_until(self, now):
        return None


# --- statistics ----------------------------------------------------------------------------
def test_the_statistics_equal_statsmodels_on_the_recorded_day():
    """BTCUSDT and ETHUSDT 1m of 2025-10-22 (real Binance data), replayed to its end."""
    paths = [str(SHARED_DATA / RECORDED[s]) for s in ("BTCUSDT", "ETHUSDT")]
    scanner = Scanner(ReplaySource(paths, "max"), SimpleCache(), NoGate())
    result = scanner.run(ScanRequest(symbols=("BTCUSDT", "ETHUSDT"), tf="1m", lookback=1440))
    closes = {s: pd.read_csv(SHARED_DATA / RECORDED[s])["close"].to_numpy() for s in ("BTCUSDT", "ETHUSDT")}
    [row] = result.rows
    assert_matches(row, expected_row("BTCUSDT", "ETHUSDT", np.log(closes["BTCUSDT"]), np.log(closes["ETHUSDT"])))
    five = scanner.run(ScanRequest(symbols=("BTCUSDT", "ETHUSDT"), tf="5m", lookback=288)).rows[0]
    every_fifth = {s: np.log(c[4::5]) for s, c in closes.items()}  # each 5 minutes' last close
    assert_matches(five, expected_row("BTCUSDT", "ETHUSDT", every_fifth["BTCUSDT"], every_fifth["ETHUSDT"]))


@pytest.fixture
def scan_exchange(fake_binance):
    fake_binance.add_scan_universe()
    return fake_binance


def exchange_scanner(fake, cache=None) -> Scanner:
    cache = cache or SimpleCache()
    return Scanner(BinanceSource(BinanceClient(fake.url)), cache, PollGate(cache, "test"))


def test_on_the_fake_exchange_a_cointegrated_pair_ranks_first_and_equals_statsmodels(scan_exchange):
    fake = scan_exchange
    result = exchange_scanner(fake).run(parse_request({"quote": "USDT", "top": "4", "tf": "1h", "lookback": "500"}))
    assert result.symbols == ["COINAUSDT", "COINBUSDT", "WALKAUSDT", "WALKBUSDT"], (
        "the top 4 TRADING USDT symbols by 24 h quote volume (not ETHBTC, quoted in BTC; not LUNAUSDT, halted)"
    )
    assert len(result.rows) == 6 and not result.skipped
    first = result.rows[0]
    assert first["pair"] == "COINAUSDT-COINBUSDT", "the known cointegrated pair, regressed the way it was made"
    assert first["eg_pvalue"] < 1e-4 and first["johansen_5pct"] and first["beta"] == pytest.approx(1.3, abs=0.05)
    assert first["half_life_bars"] == pytest.approx(math.log(2) / 0.2, rel=0.35), "AR(1) 0.8: about 3.1 bars"
    walks = next(r for r in result.rows if {r["a"], r["b"]} == {"WALKAUSDT", "WALKBUSDT"})
    assert walks["eg_pvalue"] > 0.05 and not walks["johansen_5pct"]
    assert [r["eg_pvalue"] for r in result.rows] == sorted(r["eg_pvalue"] for r in result.rows)

    last_open = result.last_bar_s
    assert last_open == (int(result.computed_at) // 3600 - 1) * 3600, "the last closed hour"
    opens = range(last_open - 499 * 3600, last_open + 1, 3600)
    series = {s: np.log([fake.bar_close(s, 3600, t) for t in opens]) for s in ("COINAUSDT", "COINBUSDT")}
    assert_matches(first, expected_row("COINAUSDT", "COINBUSDT", series["COINAUSDT"], series["COINBUSDT"]))
    assert fake.count(KLINES) == 4 and fake.count("/api/v3/ticker/24hr") == 1
    assert result.weight == 20 + 80 + 4 * 2, "exchangeInfo, every 24 h ticker, one klines request a symbol"


@pytest.mark.parametrize("seed", range(10))
def test_an_independent_random_walk_pair_never_ranks_above_a_cointegrated_one(seed):
    rng = np.random.default_rng(seed)
    n = 500
    common = np.cumsum(rng.normal(0, 0.01, n))
    spread = np.zeros(n)
    for i in range(1, n):
        spread[i] = 0.9 * spread[i - 1] + rng.normal(0, 0.01)
    walk_a, walk_b = np.cumsum(rng.normal(0, 0.01, (2, n)), axis=1)
    rows = [score_pair("WA", "WB", walk_a, walk_b), score_pair("CA", "CB", 0.7 * common + spread, common)]
    assert rank(rows)[0]["pair"] in ("CA-CB", "CB-CA")


def test_pairs_with_too_little_overlap_or_a_flat_price_are_skipped_with_the_reason():
    sim = SimSource(span_s=86_400)
    result = Scanner(sim, SimpleCache(), NoGate()).run(ScanRequest(symbols=("BTCUSDT", "ETHUSDT"), tf="1h"))
    assert result.rows == [] and "bars in common, fewer than 250" in result.skipped[0]


# --- the exchange's rules ------------------------------------------------------------------
def test_a_429_stops_the_scan_and_silences_everyone_for_the_retry_after(scan_exchange):
    fake = scan_exchange
    cache = SimpleCache()
    fake.fail_next(KLINES, 429, {"code": -1003, "msg": "Too many requests."}, headers={"Retry-After": "30"})
    scanner = exchange_scanner(fake, cache)
    with pytest.raises(ScanError, match="HTTP 429") as failed:
        scanner.run(ScanRequest(symbols=("COINAUSDT", "COINBUSDT"), tf="1h"))
    assert failed.value.status == 503
    assert scanner.gate.rate_limited_until(scanner.clock()), "the live polls keep quiet too"
    calls = fake.count(KLINES)
    with pytest.raises(ScanError, match="Rate-limited by the exchange until"):
        exchange_scanner(fake, cache).run(ScanRequest(symbols=("COINAUSDT", "COINBUSDT"), tf="1h"))
    assert fake.count(KLINES) == calls, "no request inside the window"


def test_the_weight_budget_paces_requests_and_yields_to_a_crowded_exchange():
    now = [1_000.0]
    waits = []

    def sleep(s):
        waits.append(s)
        now[0] += s

    budget = WeightBudget(100, clock=lambda: now[0], sleep=sleep)
    budget.spend(60, None, lambda s: None)
    budget.spend(40, None, lambda s: None)
    assert waits == []
    budget.spend(10, None, lambda s: None)
    assert waits == [60.0], "the minute's budget is spent: wait until the first spend is a minute old"
    now[0] = 1_230.0
    budget.spend(2, 5_900, lambda s: None)
    assert waits[-1] == pytest.approx(30.0), "the exchange's whole limit is nearly used: wait for its next minute"
    assert budget.spent == 112


def test_one_scan_at_a_time_and_a_dead_scan_frees_its_slot():
    cache = SimpleCache()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cache.set(SLOT_KEY, {"pid": int(gone.stdout), "host": socket.gethostname(), "what": "x"})
    slot = ScanSlot(cache)
    assert slot.take("k1", "mine"), "the holder died (a cancelled scan is killed): its slot is free"
    other = ScanSlot(cache)
    other.me = {**other.me, "pid": os.getppid()}  # another live process
    assert not other.take("k2", "theirs")
    other.release()
    assert cache.get(SLOT_KEY)["what"] == "mine", "only the holder releases the slot"
    slot.release()
    assert cache.get(SLOT_KEY) is None


def hold_slot(cache, key: str, what: str) -> None:
    """The slot as another live process holding it would leave it."""
    cache.set(SLOT_KEY, {"pid": os.getppid(), "host": socket.gethostname(), "key": key, "what": what})


def test_a_scan_of_something_else_running_is_said_at_once_and_the_same_one_is_waited_for():
    cache = SimpleCache()
    scanner = Scanner(SimSource(), cache, NoGate())
    req = ScanRequest(symbols=("BTCUSDT", "ETHUSDT"))
    hold_slot(cache, "scan:something-else", "top 50 USDT, 1h × 500 bars")
    with pytest.raises(ScanError, match=r"Another scan \(top 50 USDT, 1h × 500 bars\) is running") as busy:
        run_job(scanner, req, lambda *a: None)
    assert busy.value.status == 503
    hold_slot(cache, scanner.key(req), req.label)  # the same scan, run by another process
    done = Scanner(SimSource(), cache, NoGate()).run(req)  # ... which finishes
    assert run_job(scanner, req, lambda *a: None) is not None and scanner.cached(req).rows == done.rows


def test_the_api_answers_503_while_another_scan_runs_and_starts_none(tmp_path):
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path)))
    market = app.server.extensions["market"]
    hold_slot(market.cache, "scan:something-else", "top 50 USDT, 1h × 500 bars")
    resp = app.server.test_client().get("/api/scan?symbols=BTCUSDT,ETHUSDT")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert "Another scan (top 50 USDT, 1h × 500 bars) is running" in resp.get_json()["error"]
    key = market.scanner().key(parse_request({"symbols": "BTCUSDT,ETHUSDT"}))
    assert market.scans.progress(key) is None, "no process was started to wait"


# --- the HTTP API --------------------------------------------------------------------------
@pytest.fixture
def sim_client(tmp_path):
    return create_app(AppConfig(source="sim", data_dir=str(tmp_path))).server.test_client()


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("top=0", "top must be from 2 to 100"),
        ("top=101", "top must be from 2 to 100"),
        ("tf=7x", "tf must be one of 1m, 5m, 15m, 1h"),
        ("symbols=BTCUSDT,NOPEUSDT", "'NOPEUSDT' is not a symbol trading"),
        ("symbols=BTCUSDT", "2 to 100 different symbols"),
        (f"lookback={10**9}", "lookback must be from 50 to 5000"),
        ("lookback=ten", "lookback must be a whole number"),
        ("quote=US%20DT", "quote must be an asset name"),
        ("format=xml", "format must be one of csv, json"),
    ],
)
def test_bad_scan_requests_get_a_400_naming_the_value(sim_client, query, needle):
    resp = sim_client.get(f"/api/scan?{query}")
    assert resp.status_code == 400 and needle in resp.get_json()["error"]


def test_api_scan_answers_csv_and_json_and_reuses_the_result(scan_exchange, tmp_path):
    fake = scan_exchange
    client = create_app(AppConfig(source="binance", binance_url=fake.url, data_dir=str(tmp_path))).server.test_client()
    resp = client.get("/api/scan?quote=USDT&top=4&tf=1h&lookback=500")
    assert resp.status_code == 200 and resp.mimetype == "text/csv" and resp.headers["Last-Modified"]
    table = pd.read_csv(io.StringIO(resp.get_data(as_text=True)))
    assert list(table.columns) == list(COLUMNS) and len(table) == 6
    assert table.iloc[0]["pair"] == "COINAUSDT-COINBUSDT" and bool(table.iloc[0]["johansen_5pct"])
    assert fake.kline_intervals["1h"] == 4
    body = client.get("/api/scan?quote=USDT&top=4&tf=1h&lookback=500&format=json").get_json()
    assert fake.kline_intervals["1h"] == 4, "the cached result, not a second scan"
    assert body["rows"][0]["pair"] == "COINAUSDT-COINBUSDT" and body["computed_at"].endswith("Z")
    assert body["rows"][0]["eg_pvalue"] == pytest.approx(table.iloc[0]["eg_pvalue"], rel=1e-12)
    listed = client.get("/api/scan?symbols=WALKAUSDT,WALKBUSDT&tf=1h&format=json").get_json()
    assert [r["pair"] for r in listed["rows"]] in (["WALKAUSDT-WALKBUSDT"], ["WALKBUSDT-WALKAUSDT"])


def test_a_slow_scan_answers_202_with_its_progress_then_the_table(scan_exchange, tmp_path, monkeypatch):
    fake = scan_exchange
    monkeypatch.setattr(api, "SCAN_WAIT_S", 0.5)
    fake.delay_next(KLINES, 0.6, times=4)
    client = create_app(AppConfig(source="binance", binance_url=fake.url, data_dir=str(tmp_path))).server.test_client()
    url = "/api/scan?symbols=COINAUSDT,COINBUSDT,WALKAUSDT,WALKBUSDT&tf=1h"
    first = client.get(url)
    assert first.status_code == 202 and first.headers["Retry-After"] == "2"
    assert first.get_json()["status"] == "running" and "text" in first.get_json()
    for _ in range(40):
        resp = client.get(url)
        if resp.status_code == 200:
            break
    assert resp.status_code == 200 and len(resp.get_data(as_text=True).splitlines()) == 1 + 6
    assert fake.kline_intervals["1h"] == 4, "one scan, however many requests asked for it"


def test_offline_the_simulations_own_random_walks_rank_below_its_cointegrated_symbols():
    """The simulation's seven factor-driven symbols are cointegrated pairwise; LTCUSDT and
    LINKUSDT are random walks of their own: every pair with one of them ranks below every other."""
    origin = 1_761_004_800
    sim = SimSource(seed=7, origin_s=origin, clock=lambda: origin + 50_000.0)
    result = Scanner(sim, SimpleCache(), NoGate()).run(parse_request({"top": "9"}))
    assert len(result.symbols) == 9 and len(result.rows) == 36
    walkers = [i for i, r in enumerate(result.rows) if {r["a"], r["b"]} & {"LTCUSDT", "LINKUSDT"}]
    assert walkers == list(range(21, 36)), "the 21 cointegrated pairs first"
    assert all(r["eg_pvalue"] < 1e-4 for r in result.rows[:21])
