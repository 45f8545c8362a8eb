"""--cache-url: the cross-process keys on a real redis-server, shared by hosts on separate data
dirs; and each host on its own while Redis is down, back together when it returns."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from app import _banner, parse_args
from loopback import answers, free_port, wait_for
from services.cache import REDIS_RETRY_S, FailoverCache, open_shared_cache
from services.market import MarketService
from services.settings import AppConfig
from services.sources import Tick, utc_from_epoch
from services.stream import FILL_AFTER_S, LEASE_S
from workers import hammer

ROOT = Path(__file__).resolve().parents[1]


def host(fake_binance, redis_server, tmp_path, name: str) -> MarketService:
    """One host's market: its own data dir (database and file cache), the deployment's Redis."""
    data_dir = tmp_path / name
    config = AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir))
    return MarketService(config, open_shared_cache(redis_server.url, str(data_dir / "cache")))


def ticker_calls_per_interval(fake_binance, hosts, seconds: float) -> tuple[int, int]:
    """(ticker calls, poll intervals touched) while every host's tabs refresh for `seconds`."""
    before, start = fake_binance.count("/api/v3/ticker/price"), time.time()
    hammer(hosts, seconds, threads=3)
    return fake_binance.count("/api/v3/ticker/price") - before, int(time.time()) - int(start) + 1


def test_add_is_one_atomic_set_with_its_expiry_and_values_round_trip(redis_server, tmp_path):
    cache = open_shared_cache(redis_server.url, str(tmp_path / "cache"))
    won = []
    threads = [threading.Thread(target=lambda: won.append(cache.add("poll:slot", "me", timeout=5))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) == 1, "exactly one of 16 concurrent adds wins the slot"
    assert 0 < redis_server.client().ttl("pairmonitor:poll:slot") <= 5, "set with its expiry, in one command"
    ticks = [Tick("BTCUSDT", 97_000.5, utc_from_epoch(1_761_091_200.25))]
    assert cache.set("ticks:x", ticks, timeout=5) and cache.get("ticks:x") == ticks
    assert cache.delete("ticks:x") and cache.get("ticks:x") is None


def test_hosts_on_separate_data_dirs_ask_upstream_once_per_interval_through_redis(fake_binance, redis_server, tmp_path):
    hosts = [host(fake_binance, redis_server, tmp_path, name) for name in ("a", "b")]
    calls, slots = ticker_calls_per_interval(fake_binance, hosts, 3.2)
    assert 3 <= calls <= slots, f"{calls} ticker calls in {slots} intervals from two hosts"
    for h in hosts:
        assert h.store.last_tick("BTCUSDT") is not None, "the host that did not poll has the ticks too"
        assert h.snapshot().status.shared_cache["up"]


def test_with_redis_down_each_host_goes_on_alone_says_so_and_rejoins_when_it_returns(
    fake_binance, redis_server, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    hosts = [host(fake_binance, redis_server, tmp_path, name) for name in ("a", "b")]
    hammer(hosts, 1.2, threads=2)

    redis_server.stop()
    calls, slots = ticker_calls_per_interval(fake_binance, hosts, 3.2)
    assert calls <= 2 * slots, f"{calls} ticker calls in {slots} intervals: at most one per host per interval"
    assert calls >= 2 * (slots - 2), "both hosts went on polling"
    for h in hosts:
        status = h.snapshot().status
        assert status.state == "ok" and h.store.last_tick("BTCUSDT").epoch > time.time() - 2, "live from its own polls"
        shared = status.shared_cache
        assert shared["up"] is False and shared["down_since_utc"].endswith("Z")
        assert shared["url"] == f"redis://127.0.0.1:{redis_server.port}/0", "shown without its password"
        banner = str(_banner(status, auto=False))
        assert "has not answered since" in banner and redis_server.password not in banner

    redis_server.start()
    wait_for(lambda: all(h.snapshot().status.shared_cache["up"] for h in hosts), timeout=REDIS_RETRY_S + 3)
    hammer(hosts, 1.2, threads=2)  # the intervals a host still held on its own have passed
    calls, slots = ticker_calls_per_interval(fake_binance, hosts, 3.2)
    assert calls <= slots, f"{calls} ticker calls in {slots} intervals: shared again"
    logged = caplog.text
    assert "does not answer" in logged and "answers again" in logged
    assert redis_server.password not in logged, "the password is in no log line"


def test_the_cache_url_is_checked_at_start_and_its_password_never_shown(capsys):
    config, _ = parse_args(["--cache-url", "redis://:s3cret@127.0.0.1:6390/2"], environ={})
    assert config.cache_url == "redis://:s3cret@127.0.0.1:6390/2"
    cache = open_shared_cache(config.cache_url, "/nonexistent-not-made")
    assert isinstance(cache, FailoverCache) and cache.url == "redis://127.0.0.1:6390/2"
    odd = open_shared_cache("redis://:s3@cret@127.0.0.1:6390/2", "/nonexistent-not-made")
    assert odd.url == "redis://127.0.0.1:6390/2", "a password with an @ in it is not shown either"
    bad_urls = ("http://127.0.0.1:6379", "redis://", "redis://:s3cret@host/db", "redis://:s3cret@host:port/0")
    for bad in (*bad_urls, "redis://:s3cret@[::1"):
        with pytest.raises(SystemExit):
            parse_args(["--cache-url", bad], environ={})
        err = capsys.readouterr().err
        assert "--cache-url: the cache URL must be redis://" in err and "s3cret" not in err, err
    with pytest.raises(SystemExit, match="CACHE_URL: the cache URL must be") as exc:
        parse_args([], environ={"CACHE_URL": "memcached://:s3cret@h"})
    assert "s3cret" not in str(exc.value)


@pytest.mark.slow
def test_two_gunicorn_hosts_on_separate_data_dirs_poll_once_per_interval_on_one_redis(
    fake_binance, redis_server, tmp_path
):
    """The measurement that started it (two hosts, each `gunicorn -w 2`: 1.98 ticker calls a
    second), with one Redis between them."""
    hosts, procs = [], []
    for name in ("a", "b"):
        port = free_port()
        env = {
            **os.environ,
            "SOURCE": "binance",
            "BINANCE_BASE_URL": fake_binance.url,
            "CACHE_URL": redis_server.url,
            "DATA_DIR": str(tmp_path / name),
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / name / "metrics"),
        }
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:server"]
        procs.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        hosts.append(f"http://127.0.0.1:{port}/api/health")
    try:
        for url in hosts:
            wait_for(lambda url=url: answers(url), timeout=60, message=f"{url} serving")
        stop = time.time() + 5.2
        before, start = fake_binance.count("/api/v3/ticker/price"), time.time()

        states = []

        def tab(url):  # a new connection each time: either worker of the host
            while time.time() < stop:
                states.append(requests.get(url, timeout=5).json()["status"])
                time.sleep(0.1)

        threads = [threading.Thread(target=tab, args=(url,)) for url in hosts for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls, slots = fake_binance.count("/api/v3/ticker/price") - before, int(time.time()) - int(start) + 1
        assert calls <= slots, f"{calls} ticker calls in {slots} intervals from 4 workers on 2 hosts"
        assert len(states) >= 100 and states[-30:] == ["ok"] * 30, "every worker serves live prices"
        for url in hosts:
            body = requests.get(url, timeout=5).json()
            assert body["shared_cache"]["up"] and redis_server.password not in json.dumps(body)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            proc.wait(timeout=15)
            log.close()
        logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("a", "b"))
        assert redis_server.password not in logs, "the password is in no log line"


def test_a_redis_restart_mid_stream_gives_each_host_its_own_connection_then_one_and_loses_no_second(
    fake_binance, fake_stream, tape, redis_server, tmp_path
):
    config = AppConfig(
        source="stream", binance_url=fake_binance.url, stream_url=fake_stream.url, data_dir=str(tmp_path / "data")
    )
    hosts = [MarketService(config, open_shared_cache(redis_server.url, str(tmp_path / f"cache-{i}"))) for i in (0, 1)]
    try:
        for h in hosts:
            h.source()  # opened: each has its relay running
        wait_for(lambda: fake_stream.open == 1 and any(h.relay.holding for h in hosts), message="one holder")
        started = int(time.time()) + 1
        time.sleep(2)

        redis_server.stop()
        wait_for(lambda: fake_stream.open == 2, timeout=LEASE_S + 3, message="a connection for each host")
        time.sleep(2)
        redis_server.start()
        wait_for(lambda: fake_stream.open == 1, timeout=REDIS_RETRY_S + LEASE_S + 3, message="one connection again")
        assert sum(h.relay.holding for h in hosts) == 1
        time.sleep(2 + FILL_AFTER_S)  # the seconds around each switch are filled once they have closed

        closed = int(time.time()) - 2
        assert closed - started >= 6
        for h in hosts:
            held = h.store.prices("BTCUSDT", started, closed - 1)
            wrong = {
                s: (p, tape.last_of_second("BTCUSDT", s))
                for s, p in zip(range(started, closed), held)
                if p != tape.last_of_second("BTCUSDT", s)
            }
            assert not wrong, f"{h.worker_id}: seconds not holding their last trade (held, exchange): {wrong}"
    finally:
        for h in hosts:
            h.close()
