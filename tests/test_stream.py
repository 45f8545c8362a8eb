"""The WebSocket trade stream against a loopback Binance-shaped stream server with fault
switches: trades stamped with the exchange's time, pings answered, and a new connection after
a drop, a stall, a serverShutdown and refused handshakes; malformed frames counted and skipped;
and --source stream in the app, with REST taking over while the stream is down."""

import collections
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

import api
from app import create_app
from fake_stream import FakeStream
from loopback import free_port, wait_for, wait_until_serving
from services import binance
from services.cache import AtomicFileSystemCache
from services.market import MarketService
from services.settings import AppConfig
from services.stream import LEASE_S, TradeStream

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stream(fake_stream):
    client = TradeStream(fake_stream.url, watchdog_s=1.0)
    client.follow(["BTCUSDT", "ETHUSDT"])
    yield client
    client.stop()


def test_trades_come_in_order_stamped_with_the_exchanges_trade_time(stream, tape):
    wait_for(stream.live, message="the stream to be live")
    time.sleep(1.5)
    ticks = stream.drain()
    assert {t.symbol for t in ticks} == {"BTCUSDT", "ETHUSDT"} and len(ticks) >= 20
    btc = [t for t in ticks if t.symbol == "BTCUSDT"]
    assert [t.time for t in btc] == sorted(t.time for t in btc)
    for tick in btc:
        assert tick.price == tape.last("BTCUSDT", round(tick.epoch * 1000)), "the price of the trade its T names"
    last_of_second = {int(t.epoch): t.price for t in btc}
    closed = [s for s in last_of_second if s < int(time.time())]
    assert len(set(last_of_second.values())) > 1
    assert all(last_of_second[s] == tape.last_of_second("BTCUSDT", s) for s in closed)


def test_the_servers_pings_are_answered(tape):
    server = FakeStream(tape, ping_interval=0.3)  # a client that did not pong is dropped
    client = TradeStream(server.url, watchdog_s=1.0)
    try:
        client.follow(["BTCUSDT"])
        wait_for(client.live, message="live")
        time.sleep(2.0)
        assert server.connections == 1 and client.reconnects == 0 and client.live()
    finally:
        client.stop()
        server.close()


@pytest.mark.parametrize("fault", ["drop", "stall", "shutdown"])
def test_a_broken_connection_is_made_again(stream, fake_stream, fault):
    wait_for(stream.live, message="live")
    {"drop": fake_stream.drop, "stall": lambda: fake_stream.stall(2.5), "shutdown": fake_stream.shutdown}[fault]()
    wait_for(lambda: fake_stream.connections >= 2, timeout=15, message="a new connection")
    wait_for(stream.live, message="live again")
    assert stream.reconnects >= 1
    stream.drain()
    time.sleep(1.2)
    assert stream.drain(), "trades flow on the new connection"


def test_malformed_frames_and_unknown_events_are_counted_and_skipped(stream, fake_stream):
    wait_for(stream.live, message="live")
    fake_stream.garbage()
    wait_for(lambda: stream.malformed >= 1 and stream.unknown >= 1, message="counted")
    assert stream.live() and fake_stream.connections == 1, "the connection stays"


def test_refused_handshakes_are_retried_with_growing_waits_until_the_server_takes_one(tape):
    server = FakeStream(tape)
    server.refuse = True
    client = TradeStream(server.url, watchdog_s=1.0)
    try:
        client.follow(["BTCUSDT"])
        time.sleep(2.5)
        assert not client.live() and 2 <= client.reconnects <= 4, "0.25-0.5 s, then 0.5-1 s, ... between attempts"
        assert "could not connect" in client.last_error
        server.refuse = False
        wait_for(client.live, timeout=10, message="live once the server takes the handshake")
    finally:
        client.stop()
        server.close()


@pytest.mark.parametrize("fault", ["refused", "stall", "shutdown", "malformed"])
def test_the_app_stays_live_through_each_stream_fault_and_every_second_holds_its_last_trade(
    fake_binance, fake_stream, tape, tmp_path, fault, monkeypatch
):
    started = int(time.time()) + 1
    config = AppConfig(
        source="stream", binance_url=fake_binance.url, stream_url=fake_stream.url, data_dir=str(tmp_path)
    )
    app = create_app(config)
    client = app.server.test_client()
    states = []

    def health():
        body = client.get("/api/health").get_json()
        states.append(body["status"])
        return body

    def watch(seconds):
        for _ in range(int(seconds * 4)):
            body = health()
            time.sleep(0.25)
        return body

    gate = app.server.extensions["market"].gate
    claims = []
    monkeypatch.setattr(gate, "claim", lambda *args, claim=gate.claim: claims.append(claim(*args)) or claims[-1])
    wait_for(lambda: health()["source_label"].startswith("Binance stream"), message="the stream in use")
    states.clear()
    rest_calls, claimed = fake_binance.count("/api/v3/ticker/price"), len(claims)
    body = watch(2)
    assert fake_binance.count("/api/v3/ticker/price") <= rest_calls + 1, "no REST polls while it streams"
    assert len(claims) == claimed, "nor a poll slot claimed in the shared cache"
    assert body["stream"]["live"] and body["stream"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    faulted = time.time()
    if fault == "refused":
        fake_stream.refuse = True
        fake_stream.drop()
    elif fault == "stall":
        fake_stream.stall(4.0)  # the connection stays open; the trades of those seconds are never sent
    elif fault == "shutdown":
        fake_stream.shutdown()
    else:
        fake_stream.garbage()
    if fault in ("refused", "stall"):
        wait_for(lambda: health()["source_label"].startswith("Binance REST"), timeout=5, message="REST taking over")
        assert time.time() - faulted <= 2.5 + (0.5 if fault == "stall" else 0), "within two poll intervals"
        down_calls = fake_binance.count("/api/v3/ticker/price")
        body = watch(2)
        assert fake_binance.count("/api/v3/ticker/price") >= down_calls + 1, "one ticker request a poll interval"
        assert any(claims[claimed:]), "REST's slots claimed again"
        assert body["stream"]["live"] is False
        if fault == "refused":
            assert "(stream down)" in body["source_label"] and "503" in body["stream"]["last_error"]
            fake_stream.refuse = False
        else:
            assert "(stream quiet)" in body["source_label"]
    else:
        body = watch(2)
    if fault == "malformed":
        assert body["stream"]["malformed"] >= 1 and body["stream"]["unknown_events"] >= 1
        assert fake_stream.connections == 1 and body["stream"]["live"], "the connection stays"
    wait_for(lambda: health()["source_label"].startswith("Binance stream"), timeout=15, message="back on the stream")
    watch(6)  # on the stream again, and time for a hole to be filled once its seconds closed
    assert set(states) == {"ok"}, "every answer live throughout"
    assert fault in ("malformed", "stall") or health()["stream"]["reconnects"] >= 1
    rows = client.get("/api/ticks.csv?symbol=BTCUSDT&limit=2000").get_data(as_text=True).splitlines()[1:]
    per_second = collections.Counter(row[:19] for row in rows)
    assert max(per_second.values()) >= 5, "every trade kept (the fake sends 10 a second), not one a second"
    # Every closed second, on the stream, on REST while it was down (filled once it was back: the
    # seconds whose REST price was answered mid-second, and the one at each switch), and on the
    # stream again, holds the exchange's last trade of that second.
    table = pd.read_csv(io.StringIO(client.get("/api/analytics.csv?seconds=120").get_data(as_text=True)))
    closed = int(time.time()) - 2
    stored = {int(pd.Timestamp(t).timestamp()): p for t, p in zip(table["timestamp_utc"], table["BTCUSDT"])}
    seconds = range(started, closed)
    assert len(seconds) >= 6
    wrong = {s: (stored.get(s), tape.last_of_second("BTCUSDT", s)) for s in seconds}
    wrong = {s: v for s, v in wrong.items() if v[0] != v[1]}
    assert not wrong, f"seconds not holding their last trade (stored, exchange): {wrong}"
    assert any(tape.last("BTCUSDT", s * 1000 + 500) != tape.last_of_second("BTCUSDT", s) for s in seconds)
    if fault in ("refused", "stall"):
        assert len([s for s in fake_binance.served["BTCUSDT"] if s in seconds]) >= 2, "REST answered meanwhile"
        filled = client.get("/metrics").get_data(as_text=True)
        assert re.search(r"^pairmonitor_stream_filled_seconds_total [1-9]", filled, re.M), "the hole was filled"
    app.server.extensions["market"].relay.stop()


def test_a_change_of_symbols_is_subscribed_on_the_open_connection_at_most_5_messages_a_second(stream, fake_stream):
    wait_for(stream.live, message="live")
    stream.follow(["BTCUSDT", "SOLUSDT"])  # ETHUSDT out, SOLUSDT in

    def streaming(symbols):
        stream.drain()
        time.sleep(0.6)
        return {t.symbol for t in stream.drain()} == symbols

    wait_for(lambda: streaming({"BTCUSDT", "SOLUSDT"}), message="SOLUSDT's trades and no more ETHUSDT")
    assert fake_stream.connections == 1 and stream.reconnects == 0, "the same connection"
    assert [(r["method"], r["params"]) for r in fake_stream.requests] == [
        ("UNSUBSCRIBE", ["ethusdt@aggTrade"]),
        ("SUBSCRIBE", ["solusdt@aggTrade"]),
    ]
    for i in range(12):  # a burst of changes is paced, never closed for too many messages
        stream.follow(["BTCUSDT", "SOLUSDT"] if i % 2 else ["BTCUSDT"])
        time.sleep(0.05)
    time.sleep(3)
    assert fake_stream.connections == 1 and stream.live(), "within Binance's 5 messages a second"


def test_a_close_for_too_many_messages_waits_the_longest_before_the_next_connection(stream, fake_stream):
    wait_for(stream.live, message="live")
    fake_stream.flooded()
    wait_for(lambda: not stream.live(), message="closed")
    time.sleep(4)
    assert fake_stream.connections == 1, "no quick retry after a 1008 (15-30 s, jittered)"
    assert "1008" in stream.last_error


def test_processes_share_one_connection_and_a_holder_that_dies_is_replaced(fake_binance, fake_stream, tape, tmp_path):
    """(On Redis, between hosts: tests/test_shared_cache.py.)"""
    config = AppConfig(
        source="stream", binance_url=fake_binance.url, stream_url=fake_stream.url, data_dir=str(tmp_path)
    )
    cache = AtomicFileSystemCache(str(tmp_path / "cache"))
    workers = [MarketService(config, cache) for _ in range(2)]  # two processes' markets on one cache
    for worker in workers:
        worker.source()  # opened: each has its relay running
    wait_for(lambda: any(w.relay.holding for w in workers) and fake_stream.open == 1, message="one holder")
    holder, reader = sorted(workers, key=lambda w: not w.relay.holding)
    time.sleep(2)
    assert fake_stream.connections == 1 and not reader.relay.holding

    time.sleep(1.5)  # no tick, no tab: the reader's relay brings the holder's trades in as they come
    got = [t for t in reader.store.recent_ticks(["BTCUSDT"], 1000) if t.epoch > time.time() - 1.5]
    assert len(got) >= 10, "the reader has the holder's trades (10 a second), with no connection of its own"
    assert reader.store.last_tick("BTCUSDT").epoch > time.time() - 0.5, "within a few relay steps"
    assert all(t.price == tape.last("BTCUSDT", round(t.epoch * 1000)) for t in got)
    assert reader.tick().status.stream["holder"] == holder.worker_id

    reader.add_pair("SOLUSDT", "BTCUSDT")  # seen by the holder without a tab's tick: subscribed on its connection
    wait_for(lambda: ("SUBSCRIBE", ["solusdt@aggTrade"]) in [(r["method"], r["params"]) for r in fake_stream.requests])

    holder.relay._stop.set()  # the holder dies without a word: its lease is never released
    holder.relay._thread.join()
    holder.source().stream.stop()
    died = time.time()
    wait_for(lambda: reader.relay.holding and fake_stream.open == 1, timeout=8, message="the reader takes over")
    assert time.time() - died <= LEASE_S + 2 and fake_stream.connections == 2
    time.sleep(1.5)
    assert reader.store.last_tick("SOLUSDT").epoch > time.time() - 1, "its own connection streams every watched pair"
    reader.relay.stop()


@pytest.mark.slow
def test_two_gunicorn_workers_and_the_collector_hold_one_connection_and_a_killed_holder_is_replaced(
    fake_binance, fake_stream, tmp_path
):
    port = free_port()
    env = {
        **os.environ,
        "SOURCE": "stream",
        "BINANCE_BASE_URL": fake_binance.url,
        "BINANCE_STREAM_URL": fake_stream.url,
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:server"]
    collector = [sys.executable, "app.py", "--collector"]
    with open(tmp_path / "servers.log", "w") as log:
        procs = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            for command in (gunicorn, collector)
        ]
        try:
            base = f"http://127.0.0.1:{port}/api"

            def stream_state():
                try:
                    with requests.Session() as s:  # a new connection: either worker
                        return s.get(f"{base}/health", timeout=5).json()["stream"]
                except requests.ConnectionError:  # still starting
                    return {"live": False, "holder": None}

            wait_for(lambda: stream_state()["live"], timeout=60, message="the stream live")
            time.sleep(3)  # every process has had time to try for the lease
            first = stream_state()["holder"]
            assert fake_stream.connections == 1 and fake_stream.open == 1, "one connection for three processes"
            rest_calls = fake_binance.count("/api/v3/ticker/price")
            for _ in range(10):
                state = stream_state()
                assert state["live"] and state["holder"] == first
                time.sleep(0.2)
            assert fake_binance.count("/api/v3/ticker/price") <= rest_calls + 1, "no REST polls while it streams"

            os.kill(int(first.split("-")[0]), signal.SIGKILL)
            killed = time.time()
            wait_for(lambda: stream_state()["holder"] not in (None, first), timeout=15, message="a new holder")
            wait_for(lambda: stream_state()["live"], timeout=10, message="live again")
            replaced_in = time.time() - killed
            time.sleep(2)
            assert fake_stream.connections == 2 and fake_stream.open == 1, "one connection again"
            assert replaced_in <= 8, f"replaced in {replaced_in:.1f} s"
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_the_live_cards_are_pushed_as_server_sent_events_and_the_pushes_are_bounded(
    fake_binance, fake_stream, tape, tmp_path, monkeypatch
):
    monkeypatch.setattr(api, "PUSH_SLOTS", 1)
    config = AppConfig(
        source="stream", binance_url=fake_binance.url, stream_url=fake_stream.url, data_dir=str(tmp_path)
    )
    app = create_app(config)
    client = app.server.test_client()
    wait_for(lambda: client.get("/api/health").get_json()["stream"]["live"], message="the stream live")
    assert client.get("/api/push?page=/nowhere").status_code == 404
    unwatched = client.get("/api/push?page=/live&pair=SOLUSDT-BTCUSDT")
    assert unwatched.status_code == 400 and "not a watched pair" in unwatched.get_json()["error"]

    resp = client.get("/api/push?page=/live&pair=BTCUSDT-ETHUSDT", buffered=False)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-store"
    chunks = (chunk.decode() for chunk in resp.response)
    assert next(chunks).startswith("retry: ")
    busy = client.get("/api/push?page=/live")
    assert busy.status_code == 503 and busy.headers["Retry-After"], "one push at a time here (PUSH_SLOTS=1)"
    events, started = [], time.time()
    while len(events) < 8:
        chunk = next(chunks)
        if chunk.startswith("data: "):
            events.append(json.loads(chunk[len("data: ") :]))
    took = time.time() - started
    resp.close()
    assert took < 2.0, f"8 events in {took:.2f} s: as the trades come (10 a second), not once a tick"
    stamps = [e["stamps"]["live-a-price.children"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "each event a newer trade"
    for event in events:
        stamp = pd.Timestamp(event["stamps"]["live-a-price.children"])
        price = float(event["values"]["live-a-price.children"].replace(",", ""))
        assert price == tape.last("BTCUSDT", round(stamp.timestamp() * 1000))
        assert f"last tick {event['stamps']['live-a-sub.children']}" in event["values"]["live-a-sub.children"]
    assert client.get("/api/push?page=/live", buffered=False).status_code == 200, "the closed stream's slot is free"

    monkeypatch.setattr(api, "PUSH_KEEPALIVE_S", 0.5)
    quiet = client.get("/api/push?page=/live", buffered=False)
    chunks = (chunk.decode() for chunk in quiet.response)
    assert next(chunks).startswith("retry: ") and next(chunks).startswith("data: ")
    fake_stream.stall(1.8)  # no trade, so nothing new to push: a comment keeps the connection in use
    started, seen = time.time(), []
    while not seen or seen[-1] != ": keep-alive\n\n":
        seen.append(next(chunks))
        assert time.time() - started < 1.5, f"no keep-alive in a quiet {time.time() - started:.1f} s: {seen}"
    quiet.close()
    app.server.extensions["market"].relay.stop()


def test_the_dev_server_sends_each_pushed_event_in_one_piece_and_logs_only_failed_requests(
    fake_binance, fake_stream, tape, tmp_path
):
    """`python app.py` serves with werkzeug's dev server, which writes a chunk's size, data and end
    separately: its handler buffers them, so each event leaves in one send and the reader wakes
    once (on loopback, every read ends on an event). Its access log has the requests that went
    wrong, not every tab's tick."""
    port = free_port()
    command = [sys.executable, "app.py", "--source", "stream", "--binance-url", fake_binance.url]
    command += ["--stream-url", fake_stream.url, "--port", str(port), "--data-dir", str(tmp_path)]
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc, port)
        health = f"http://127.0.0.1:{port}/api/health"
        wait_for(lambda: requests.get(health, timeout=5).json()["stream"]["live"], message="the stream live")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/push?page=/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            head, piece = head.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
            events = 0
            while events < 5:
                piece = piece or sock.recv(65536)
                size, rest = piece.split(b"\r\n", 1)
                assert len(rest) == int(size, 16) + 2 and rest.endswith(b"\r\n"), (
                    f"a read of part of an event: {piece!r}"
                )
                events += rest.startswith(b"data: {")
                piece = b""
        assert requests.get(f"http://127.0.0.1:{port}/api/no-such-route", timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    logged = (tmp_path / "app.log").read_text()
    assert re.search(r"GET /api/no-such-route HTTP/1.1\S*\" 404", logged), "a failed request is logged"
    assert "GET /api/health" not in logged and "GET /api/push" not in logged


def test_nothing_is_pushed_when_the_source_does_not_stream(fake_binance, tmp_path):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path)))
    resp = app.server.test_client().get("/api/push?page=/live")
    assert resp.status_code == 204, "the page's tick is as fresh: the browser's EventSource stays closed"


def test_the_stream_moves_with_the_rest_host_after_a_451_and_on_a_settings_change(
    fake_binance, tape, tmp_path, monkeypatch
):
    """--stream-url left at its default: the stream is the REST host's own, whichever that is."""
    restricted = fake_binance.url
    other = restricted.replace("localhost", "127.0.0.1")
    first, second = FakeStream(tape), FakeStream(tape)
    monkeypatch.setitem(binance.STREAM_URLS, restricted, first.url)
    monkeypatch.setitem(binance.STREAM_URLS, other, second.url)
    config = AppConfig(source="stream", binance_url=restricted, fallback_urls=(other,), data_dir=str(tmp_path))
    app = create_app(config)
    client = app.server.test_client()

    def streaming_from(server):
        stream = client.get("/api/health").get_json()["stream"]
        return stream["live"] and stream["url"] == server.url and server.open == 1

    try:
        wait_for(lambda: streaming_from(first), message="the first host's stream")
        first.refuse = True  # a restricted location: its stream refuses, and its REST answers 451
        first.drop()
        fake_binance.fail_next(
            "/api/v3/ticker/price", 451, {"code": 0, "msg": "Service unavailable from a restricted location"}
        )
        wait_for(lambda: streaming_from(second), timeout=15, message="the fallback host's stream")
        assert first.open == 0 and client.get("/api/settings").get_json()["binance_url"] == other

        first.refuse = False
        assert client.patch("/api/settings", json={"binance_url": restricted}).status_code == 200
        wait_for(lambda: streaming_from(first), timeout=15, message="back on the first host's stream")
        assert second.open == 0
    finally:
        app.server.extensions["market"].close()
        first.close()
        second.close()
