"""MarketService: one upstream poll per interval, backfill, holes, alerts, settings persistence."""

import json
import multiprocessing
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
from cachelib import SimpleCache

from scripted import ScriptedSource
from services import db as db_module
from services.binance import BinanceClient
from services.cache import AtomicFileSystemCache
from services.gate import PollGate
from services.market import MarketService
from services.settings import AppConfig, SettingsError
from services.sources import BinanceSource, SimSource
from workers import hammer


def sim_market(tmp_path, clock, **kw):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=kw.pop("history_s", 7_200))
    source = SimSource(seed=7, origin_s=int(clock()) - cfg.history_s, span_s=cfg.history_s, clock=clock)
    return MarketService(cfg, SimpleCache(), clock=clock, source=source)


def test_one_upstream_poll_per_interval_with_many_clients(fake_binance, tmp_path):
    cfg = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path))
    market = MarketService(cfg, SimpleCache(), source=BinanceSource(BinanceClient(fake_binance.url)))
    start = time.time()
    hammer([market], 3.2, threads=8)
    slots = int(time.time()) - int(start) + 1  # poll intervals (1 s) the run touched
    calls = fake_binance.count("/api/v3/ticker/price")
    assert 3 <= calls <= slots, f"{calls} ticker/price calls in {slots} intervals"
    assert fake_binance.count("/api/v3/klines") == 2, "one backfill per symbol, once"


def test_two_workers_share_one_poll_per_interval(fake_binance, tmp_path):
    """Two processes' services (here: two instances) sharing the FileSystemCache poll once per slot."""
    cfg = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path))
    workers = [
        MarketService(
            cfg, AtomicFileSystemCache(str(tmp_path / "cache")), source=BinanceSource(BinanceClient(fake_binance.url))
        )
        for _ in range(2)
    ]
    start = time.time()
    hammer(workers, 3.2, threads=4)
    slots = int(time.time()) - int(start) + 1
    calls = fake_binance.count("/api/v3/ticker/price")
    assert 3 <= calls <= slots, f"{calls} ticker/price calls in {slots} intervals from two workers"
    for w in workers:
        assert w.store.last_tick("BTCUSDT") is not None, "the worker that did not poll still has the ticks"


def test_backfill_defines_z_on_first_refresh(tmp_path, clock):
    market = sim_market(tmp_path, clock)
    assert market.refresh() is True
    now = int(clock())
    row = market.frame(market.snapshot(), now, now).iloc[-1]
    assert not np.isnan(row["zscore"]) and not np.isnan(row["BTCUSDT"])
    assert market.refresh() is False, "same poll interval: no second upstream call"


def test_a_hole_is_backfilled_into_the_right_seconds(tmp_path, clock):
    market = sim_market(tmp_path, clock)
    market.refresh()
    before = int(clock())
    clock.advance(120)
    market.refresh()
    after = int(clock())
    got = market.store.prices("ETHUSDT", before, after)
    expected = [t.price for t in market.source().history("ETHUSDT", before, after)]
    np.testing.assert_array_equal(got, expected)


def test_stale_data_is_reported_and_never_live(fake_binance, tmp_path):
    cfg = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path))
    now = [time.time()]
    market = MarketService(
        cfg, SimpleCache(), clock=lambda: now[0], source=BinanceSource(BinanceClient(fake_binance.url))
    )
    market.refresh()
    assert market.snapshot().status.state == "ok" and market.snapshot().status.last_error is None
    fake_binance.fail_next("/api/v3/ticker/price", 500, {"code": -1000, "msg": "An unknown error occurred"}, times=100)
    for _ in range(10):
        now[0] += 1
        market.refresh()
    status = market.snapshot().status.as_dict()
    assert status["status"] == "stale" and status["age_s"] > status["stale_after_s"]
    assert status["last_error"]["status"] == 500 and "unknown error" in status["last_error"]["message"]
    last = int(now[0])
    tail = market.frame(market.snapshot(), last - 3, last)
    assert tail["BTCUSDT"].isna().all(), "no price is carried forward past the fill limit"


@pytest.mark.parametrize("n_tabs", [1, 4])
def test_alerts_fire_once_per_crossing_whatever_the_number_of_clients(tmp_path, clock, n_tabs):
    origin = int(clock()) - 1_000
    n = 2_000
    rng = np.random.default_rng(4)
    spread = np.cumsum(rng.normal(size=n)) * 0.3
    spread[1_300:1_310] += 25  # a blow-out, then back
    spread[1_600:1_640] -= 30
    prices = {"AAAUSDT": 1_000 + spread, "BBBUSDT": np.full(n, 500.0)}
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_000)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=ScriptedSource(clock, origin, prices))
    market.settings_store.save(market.settings_store.current().__class__("AAAUSDT", "BBBUSDT", 2.0, 30, 1.0))
    start = int(clock())
    stop = threading.Event()

    def tab():
        while not stop.is_set():
            market.refresh()
            time.sleep(0.001)

    tabs = [threading.Thread(target=tab) for _ in range(n_tabs)]
    for t in tabs:
        t.start()
    deadline = time.time() + 120
    while clock.now < origin + n - 2:
        clock.advance(1)
        while market.store.latest_second("AAAUSDT") != int(clock()):  # the tabs poll each second
            assert time.time() < deadline and all(t.is_alive() for t in tabs), "the tabs stopped polling"
            time.sleep(0.0002)
    stop.set()
    for t in tabs:
        t.join()
    market.refresh()
    # Reference: plain pandas over the script, crossings counted by hand from the first evaluated second.
    s = pd.Series(prices["AAAUSDT"] - prices["BBBUSDT"])
    z = ((s - s.rolling(30).mean()) / s.rolling(30).std()).to_numpy()
    first, last = start - origin - 1, int(clock()) - 1 - origin
    expected, outside = [], abs(z[first]) >= 2
    for i in range(first + 1, last + 1):
        now_out = abs(z[i]) >= 2
        if now_out and not outside:
            expected.append(origin + i)
        outside = now_out
    got = sorted(int(a.time.timestamp()) for a in market.alerts.log())
    assert len(expected) >= 3
    assert got == expected
    assert all(a.pair == "AAAUSDT/BBBUSDT" for a in market.alerts.log())


def test_settings_survive_a_restart_and_bad_input_changes_nothing(tmp_path, clock):
    market = sim_market(tmp_path, clock)
    market.save_settings(
        {"symbol_a": "SOLUSDT", "symbol_b": "BNBUSDT", "threshold": "2.5", "window": "120", "poll_interval_s": 2}
    )

    def saved_row():
        return market.db.query("SELECT version, body FROM settings")

    saved = saved_row()
    for bad, message in [
        ({"threshold": 0}, "from 0.01 to 100"),
        ({"threshold": 1e308}, "from 0.01 to 100"),
        ({"threshold": 1e-300}, "from 0.01 to 100"),
        ({"threshold": True}, "must be a number, got True"),
        ({"threshold": "9" * 10_000}, "finite number, got '9{78}…$"),
        ({"threshold": "nan"}, "finite"),
        ({"window": 1}, "from 2"),
        ({"window": 2.5}, "whole number"),
        ({"window": None}, "required"),
        ({"poll_interval_s": 0.1}, "0.5"),
        ({"symbol_b": "SOLUSDT"}, "must differ"),
        ({"symbol_a": "NOPEUSDT"}, "not a symbol"),
    ]:
        with pytest.raises(SettingsError, match=message):
            market.save_settings(bad)
        assert saved_row() == saved
    restarted = sim_market(tmp_path, clock)
    s = restarted.current_settings()
    assert (s.symbol_a, s.symbol_b, s.threshold, s.window, s.poll_interval_s) == ("SOLUSDT", "BNBUSDT", 2.5, 120, 2.0)


def test_corrupt_saved_settings_keep_the_defaults_and_say_so(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(db_module, "PULSE_EVERY_S", 0.0)  # another process's write, seen at once
    market = sim_market(tmp_path, clock)
    with market.db.write() as conn:
        conn.exec_driver_sql("UPDATE settings SET body = '{not json', version = version + 1")
    assert market.current_settings().pair == ("BTCUSDT", "ETHUSDT")
    assert "unreadable" in market.snapshot().status.settings_error


def test_settings_json_of_an_older_version_is_taken_over_once(tmp_path, clock):
    (tmp_path / "settings.json").write_text(
        json.dumps({"symbol_a": "SOLUSDT", "symbol_b": "BNBUSDT", "threshold": 3, "window": 90, "poll_interval_s": 2})
    )
    market = sim_market(tmp_path, clock)
    saved = market.current_settings()
    assert (saved.pair, saved.threshold, saved.window) == (("SOLUSDT", "BNBUSDT"), 3, 90)
    assert not (tmp_path / "settings.json").exists() and (tmp_path / "settings.json.imported").exists()
    assert sim_market(tmp_path, clock).current_settings().window == 90


def test_pair_change_backfills_the_new_pair_and_forgets_the_old(tmp_path, clock):
    market = sim_market(tmp_path, clock)
    market.refresh()
    market.save_settings({"symbol_a": "SOLUSDT", "symbol_b": "XRPUSDT"})
    clock.advance(1)
    market.refresh()
    now = int(clock())
    assert not np.isnan(market.frame(market.snapshot(), now, now)["zscore"].iloc[-1])
    assert market.store.latest_second("BTCUSDT") is None
    assert sim_market(tmp_path, clock).current_settings().pair == ("SOLUSDT", "XRPUSDT")


def test_statistics_are_memoised_until_the_schedule_or_the_inputs_change(tmp_path, clock):
    market = sim_market(tmp_path, clock)
    market.refresh()
    first = market.statistics(market.snapshot(), 60)
    assert first["adf"] is not None and first["bars"] > 800
    clock.advance(5)
    market.refresh()
    assert market.statistics(market.snapshot(), 60)["computed_utc"] == first["computed_utc"], (
        "not recomputed every tick"
    )
    assert market.statistics(market.snapshot(), 30)["computed_utc"] != first["computed_utc"], "new inputs, new figures"
    clock.advance(30)
    market.refresh()
    assert market.statistics(market.snapshot(), 60)["computed_utc"] != first["computed_utc"], "recomputed on schedule"


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_window_means_no_request_at_all_from_any_worker(fake_binance, tmp_path, status):
    cfg = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path))
    workers = [
        MarketService(
            cfg, AtomicFileSystemCache(str(tmp_path / "cache")), source=BinanceSource(BinanceClient(fake_binance.url))
        )
        for _ in range(2)
    ]
    workers[0].refresh()
    fake_binance.fail_next(
        "/api/v3/ticker/price",
        status,
        {"code": -1003, "msg": "Way too much request weight"},
        headers={"Retry-After": "3"},
    )
    time.sleep(1.05)
    workers[0].refresh()
    limited_at = time.time()
    before = len(fake_binance.times["/api/v3/ticker/price"])
    status_now = workers[1].snapshot().status.as_dict()
    assert status_now["rate_limit_resumes_in_s"] > 1.5 and status_now["rate_limited_until_utc"].endswith("Z")
    hammer(workers, 2.5, threads=3)
    inside = [t for t in fake_binance.times["/api/v3/ticker/price"] if t < limited_at + 2.9]
    assert len(inside) == before, "a request inside the Retry-After window"
    hammer(workers, 1.5, threads=3)
    assert len(fake_binance.times["/api/v3/ticker/price"]) > before, "polling resumes after the window"
    assert workers[0].snapshot().status.rate_limit_resumes_in_s is None


def test_a_window_another_process_opens_stops_the_next_request_at_once_and_shows_within_max_age(tmp_path):
    cache = AtomicFileSystemCache(str(tmp_path / "cache"))
    here, there = PollGate(cache, "here"), PollGate(cache, "there")
    now = time.time()
    assert here.rate_limited_until(now, max_age_s=0.5) is None, "a tab's status read: no window"
    there.open_rate_limit_window(429, 30, now)
    time.sleep(0.5)
    assert here.rate_limited_until(now + 1, max_age_s=0.5) == now + 30, "a tab shows it within max_age_s"
    assert here.rate_limited_until(now + 31, max_age_s=0.5) is None, "and not once it is over"

    cache.delete("upstream:rate-limited-until")
    elsewhere = PollGate(cache, "elsewhere")
    assert elsewhere.rate_limited_until(now, max_age_s=60) is None, "a tab's status read: no window"
    there.open_rate_limit_window(418, 30, now)
    assert elsewhere.claim(("BTCUSDT", "ETHUSDT"), 1.0, now + 1) is None, "what decides a request is read fresh"


def test_never_two_polls_in_flight_even_when_the_exchange_is_slower_than_the_interval(fake_binance, tmp_path):
    cfg = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path))
    workers = [
        MarketService(
            cfg, AtomicFileSystemCache(str(tmp_path / "cache")), source=BinanceSource(BinanceClient(fake_binance.url))
        )
        for _ in range(2)
    ]
    workers[0].refresh()
    in_flight, most = [0], [0]
    lock = threading.Lock()
    for w in workers:
        poll = w.source().poll

        def tracked(symbols, poll=poll):
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            try:
                return poll(symbols)
            finally:
                with lock:
                    in_flight[0] -= 1

        w.source().poll = tracked
    fake_binance.delay_next("/api/v3/ticker/price", 2.5, times=2)  # answers take 2.5 poll intervals
    before = fake_binance.count("/api/v3/ticker/price")
    hammer(workers, 8, threads=3)
    assert most[0] == 1, "two polls were waiting for the exchange at once"
    assert fake_binance.count("/api/v3/ticker/price") - before >= 4, "polling goes on once answers come"


def test_the_shared_cache_sweeps_expired_entries_without_a_count_file(tmp_path, monkeypatch):
    cache = AtomicFileSystemCache(str(tmp_path / "cache"), threshold=0)
    monkeypatch.setattr(AtomicFileSystemCache, "SWEEP_EVERY_S", 0)
    for i in range(5):
        assert cache.add(f"poll:{i}", "w1", timeout=1)
    assert not cache.add("poll:0", "w2", timeout=1), "a slot is won once"
    time.sleep(1.1)
    cache.set("ticks:x", [1], timeout=60)  # any write sweeps what has expired
    files = [f for f in (tmp_path / "cache").iterdir()]
    assert len(files) == 1 and cache.get("ticks:x") == [1], "only the live entry is left, and no count file"


def _reclaim(directory, key, start, results, reclaim_at):
    cache = AtomicFileSystemCache(directory, threshold=0)
    cache._last_sweep = time.time()  # a busy process swept a moment ago: the expired entry is still there
    checked = cache.has

    def slow_has(k):  # every process sees the key expired before any reclaims it, then one by one
        found = checked(k)
        time.sleep(max(0.0, reclaim_at - time.time()))
        return found

    cache.has = slow_has
    start.wait()
    results.put(cache.add(key, os.getpid(), timeout=5))


def test_an_expired_key_reclaimed_by_many_processes_at_once_is_won_by_exactly_one(tmp_path):
    directory = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("fork")
    for round_ in range(4):
        key = f"lease:{round_}"
        assert AtomicFileSystemCache(directory, threshold=0).add(key, "dead holder", timeout=1)
        time.sleep(2.05)  # expired (the file cache counts whole seconds)
        start, results, at = ctx.Event(), ctx.Queue(), time.time() + 1.0
        procs = [ctx.Process(target=_reclaim, args=(directory, key, start, results, at + i * 0.01)) for i in range(8)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(timeout=20)
        won = [results.get(timeout=5) for _ in procs]
        assert won.count(True) == 1, f"round {round_}: {won.count(True)} processes took the expired key"
        holder = AtomicFileSystemCache(directory, threshold=0).get(key)
        assert holder in {p.pid for p in procs}
    assert not [f for f in os.listdir(directory) if f.endswith(".expired")], "nothing is left aside"
