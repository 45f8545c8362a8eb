"""The embedded store: history, settings and the alert log across restarts (SIGKILL included),
several writers, retention, and the headless collector beside the web app."""

import csv
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
from cachelib import SimpleCache
from werkzeug import Response

from loopback import free_port
from scripted import ScriptedSource
from services import db as db_module
from services.alerts import Alert, AlertLog
from services.db import Database, Unreachable
from services.history import History
from services.market import MarketService
from services.netguard import WebhookPolicy
from services.notify import WebhookNotifier
from services.settings import AppConfig, SettingsStore, validate
from services.sources import Tick, utc_from_epoch

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_761_091_200


def ticks(symbol, seconds, price=lambda s: 100.0 + s % 7):
    return [Tick(symbol, price(s), utc_from_epoch(s + 0.25)) for s in seconds]


def test_history_keeps_the_last_tick_of_each_second_and_prunes_past_the_span(tmp_path):
    db = Database(tmp_path)
    assert db.journal_mode() == "wal"
    h = History(db, "binance", span_s=100)
    h.save(ticks("BTCUSDT", range(T0, T0 + 200)), raw=[])
    late = Tick("BTCUSDT", 1.0, utc_from_epoch(T0 + 10.9))
    early = Tick("BTCUSDT", 2.0, utc_from_epoch(T0 + 10.1))
    h.save([late, early], raw=[late])
    got = {int(t.epoch): t.price for t in h.buckets("BTCUSDT", T0, T0 + 199)}
    assert got[T0 + 10] == 1.0, "the later tick of the second wins, whatever the write order"
    assert History(db, "sim-7-0", 100).buckets("BTCUSDT", T0, T0 + 199) == [], "sources never mix"
    assert h.prune(T0 + 199) > 0
    kept = [int(t.epoch) for t in h.buckets("BTCUSDT", T0, T0 + 199)]
    assert kept[0] == T0 + 99 and kept[-1] == T0 + 199
    assert h.recent_ticks("BTCUSDT", 5) == [], "raw ticks older than the span are pruned too"


def test_a_restarted_service_resumes_from_the_store_and_backfills_only_the_hole(tmp_path, clock):
    n = 3_000
    prices = {"AAAUSDT": 1_000 + np.sin(np.arange(n) / 50) * 5, "BBBUSDT": np.full(n, 500.0)}
    origin = int(clock()) - 1_000
    source = ScriptedSource(clock, origin, prices)
    calls = []
    history = source.history
    source.history = lambda *a: calls.append(a) or history(*a)
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=2_000)
    first = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    first.save_settings({"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT"})
    for _ in range(30):
        clock.advance(1)
        first.refresh()
    before = first.frame(first.snapshot(), int(clock()) - 900, int(clock()))
    clock.advance(120)  # down for two minutes
    calls.clear()
    second = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    second.refresh()
    now = int(clock())
    after = second.frame(second.snapshot(), now - 1_020, now)
    common = before.index.intersection(after.index)
    assert len(common) > 800
    assert after.loc[common, "AAAUSDT"].equals(before.loc[common, "AAAUSDT"])
    hole = (now - 119, now - 1)  # the last tick stored was at now - 120
    assert sorted(calls) == [("AAAUSDT", *hole), ("BBBUSDT", *hole)], f"only the hole is fetched, got {calls}"
    assert not after["AAAUSDT"].iloc[-121:].isna().any(), "the hole is filled"


def test_a_settings_save_shows_at_once_here_and_within_a_second_in_another_process(tmp_path, monkeypatch):
    """Every tab's tick reads the settings; the version is looked at once a second, not per tick."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(db_module.time, "monotonic", lambda: clock["now"])
    here, there = SettingsStore(Database(tmp_path / "pm.db")), SettingsStore(Database(tmp_path / "pm.db"))
    assert there.current().symbol_a == "BTCUSDT"
    saved = here.save(replace(here.current(), symbol_a="SOLUSDT"))
    assert here.current() == saved, "the process that saved shows it at once"
    clock["now"] += 0.5
    assert there.current().symbol_a == "BTCUSDT", "looked less than a second ago"
    clock["now"] += 0.5
    assert there.current() == saved


def test_what_every_tick_looks_at_in_the_database_is_one_statement_a_second(tmp_path, monkeypatch):
    """The settings' version, the webhook's last delivery and the newest alert's id are read in
    one statement at most once a second per process (the database's Pulse); what this process
    writes shows here at once, and in another process within a second."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(db_module.time, "monotonic", lambda: clock["now"])

    def process():
        db = Database(tmp_path)
        return db, SettingsStore(db), AlertLog(db), WebhookNotifier(db, WebhookPolicy())

    first = SettingsStore(Database(tmp_path))
    first.save(first.current())  # settings saved once: a version to look at
    here, there = process(), process()
    statements = {id(here): 0, id(there): 0}  # connections taken: each read, or write, takes one
    for p in (here, there):
        connection = p[0].connection
        monkeypatch.setattr(
            p[0], "connection", lambda c=connection, p=p: statements.update({id(p): statements[id(p)] + 1}) or c()
        )

    def look(p) -> tuple:
        return p[1].current().symbol_a, p[2].last_id(), (p[3].status() or {}).get("detail")

    before = ("BTCUSDT", 0, None)
    assert [look(there) for _ in range(10)] == [before] * 10 and statements[id(there)] == 2  # the pulse, the rows
    assert look(here) == before
    here[1].save(replace(here[1].current(), symbol_a="SOLUSDT"))
    [alert] = here[2].add([Alert(100, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "SOLUSDT/ETHUSDT", 2.5, 2.0, 2.5, 1.0)])
    here[3]._record(alert, True, "answered HTTP 200")
    wrote = statements[id(here)]
    after = ("SOLUSDT", alert.id, "answered HTTP 200")
    assert [look(here) for _ in range(10)] == [after] * 10, "the process that wrote shows it at once"
    assert statements[id(here)] == wrote, "without reading it back"
    clock["now"] += 0.5
    assert look(there) == before and statements[id(there)] == 2, "looked less than a second ago"
    clock["now"] += 0.5
    assert look(there) == after and statements[id(there)] == 4

    def down():
        statements[id(there)] += 1
        raise Unreachable("down")

    monkeypatch.setattr(there[0], "connection", down)
    clock["now"] += 1.0
    assert [look(there) for _ in range(10)] == [after] * 10, "while the database is down, what was read last"
    assert statements[id(there)] == 5, "a read that failed is not tried again within the second"
    cut_off = process()  # a process that never read it: the defaults
    monkeypatch.setattr(cut_off[0], "connection", down)
    assert [look(cut_off) for _ in range(3)] == [before] * 3


def test_several_processes_write_at_once_without_errors(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from services.db import Database\nfrom services.history import History\n"
        "from services.sources import Tick, utc_from_epoch\n"
        "h = History(Database(sys.argv[2]), 'binance', 10**9)\n"
        "for i in range(300):\n"
        "    h.save([Tick(sys.argv[3], float(i), utc_from_epoch(1e9 + i))], [])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(tmp_path), sym])
        for sym in ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    ]
    db = Database(tmp_path)
    reads = 0
    while any(p.poll() is None for p in procs):
        db.query("SELECT count(*) FROM buckets")
        reads += 1
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert db.query("SELECT count(*) FROM buckets")[0][0] == 900 and reads > 10


# --- real processes -------------------------------------------------------------------------
def start(args, data_dir, log):
    return subprocess.Popen(
        [sys.executable, "app.py", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_http(url, timeout=30, ok=lambda r: r.status_code == 200):
    end = time.time() + timeout
    while time.time() < end:
        try:
            r = requests.get(url, timeout=2)
            if ok(r):
                return r
        except requests.RequestException:  # not listening yet, or still starting up
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_history_settings_or_alerts(fake_binance, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    args = ["--source", "binance", "--binance-url", fake_binance.url, "--port", str(port)]
    data = tmp_path / "data"
    with open(tmp_path / "app.log", "w") as log:
        app = start(args, data, log)
        try:
            wait_http(f"{base}/health")
            store = SettingsStore(Database(data))
            store.save(
                validate(
                    {
                        "symbol_a": "BTCUSDT",
                        "symbol_b": "ETHUSDT",
                        "threshold": 1.7,
                        "window": 45,
                        "poll_interval_s": 1,
                        "rules": [{"kind": "abs_z"}, {"kind": "spread_above", "level": 1e9}],
                    }
                )
            )
            wait_http(f"{base}/settings", ok=lambda r: r.json()["window"] == 45)
            requests.post(f"{base}/alerts/test", timeout=5).raise_for_status()
            time.sleep(4)
            before = csv_rows(requests.get(f"{base}/analytics.csv?seconds=600", timeout=5).text)
            alerts_before = requests.get(f"{base}/alerts.csv", timeout=5).text
            settings_before = requests.get(f"{base}/settings", timeout=5).json()
        finally:
            app.send_signal(signal.SIGKILL)
            app.wait()
        assert app.returncode == -signal.SIGKILL
        time.sleep(2)
        fake_binance.fail_next("/api/v3/klines", 500, {"code": -1000, "msg": "down"}, times=1_000)
        app = start(args, data, log)  # restarted while the exchange cannot backfill: only the store can help
        try:
            wait_http(f"{base}/health", ok=lambda r: r.status_code in (200, 503))
            assert requests.get(f"{base}/settings", timeout=5).json() == settings_before
            alerts_after = requests.get(f"{base}/alerts.csv", timeout=5).text
            assert alerts_after.startswith(alerts_before), "the log is intact (new alerts may follow it)"
            after = {
                r["timestamp_utc"]: r
                for r in csv_rows(requests.get(f"{base}/analytics.csv?seconds=900", timeout=5).text)
            }
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=10)
    recorded = [r for r in before if r["BTCUSDT"]]
    assert len(recorded) > 500
    assert all(after[r["timestamp_utc"]]["BTCUSDT"] == r["BTCUSDT"] for r in recorded), "history intact"
    assert "Test alert" in alerts_before and settings_before["rules"][1]["level"] == 1e9


@pytest.mark.slow
def test_the_collector_alerts_with_nobody_watching_and_the_web_app_shows_its_history(fake_binance, tmp_path):
    data = tmp_path / "data"
    SettingsStore(Database(data)).save(
        validate({"symbol_a": "BTCUSDT", "symbol_b": "ETHUSDT", "threshold": 1.0, "window": 10, "poll_interval_s": 1})
    )
    port = free_port()
    with open(tmp_path / "collector.log", "w") as log:
        collector = start(["--collector", "--source", "binance", "--binance-url", fake_binance.url], data, log)
        try:
            deadline = time.time() + 60
            alerts = Database(data)
            while not alerts.query("SELECT count(*) FROM alerts")[0][0] or time.time() < deadline - 50:
                assert time.time() < deadline and collector.poll() is None, "the collector raised no alert"
                time.sleep(0.5)
            started = time.time()
            recorded = alerts.query("SELECT count(*) FROM ticks WHERE tick_ns < :ns", {"ns": int(started * 1e9)})[0][0]
            web = start(["--source", "binance", "--binance-url", fake_binance.url, "--port", str(port)], data, log)
            try:
                base = f"http://127.0.0.1:{port}/api"
                wait_http(f"{base}/health")
                alert_rows = csv_rows(requests.get(f"{base}/alerts.csv", timeout=5).text)
                assert alert_rows and alert_rows[0]["rule"] == "|z| ≥ 1"
                calls_before = len(fake_binance.times["/api/v3/ticker/price"])
                time.sleep(5)
                calls = [t for t in fake_binance.times["/api/v3/ticker/price"][calls_before:]]
                ticks_csv = csv_rows(requests.get(f"{base}/ticks.csv?limit=10000", timeout=5).text)
            finally:
                web.send_signal(signal.SIGTERM)
                web.wait(timeout=10)
        finally:
            collector.send_signal(signal.SIGTERM)
            collector.wait(timeout=10)
    assert collector.returncode == 0, "the collector stops cleanly on SIGTERM"
    assert len(calls) <= 6, f"collector and web app together: {len(calls)} ticker calls in 5 s"
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f"{started % 1:.3f}"[1:] + "Z"
    older = [r for r in ticks_csv if r["timestamp_utc"] < cutoff]
    assert recorded >= 16 and len(older) == recorded, "the web app shows every tick the collector recorded"


@pytest.mark.slow
def test_two_gunicorn_workers_poll_once_per_interval_and_deliver_each_alert_once(fake_binance, tmp_path, httpserver):
    received = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda r: (received.append(r.get_json()["id"]), Response("ok"))[1]
    )
    data = tmp_path / "data"
    SettingsStore(Database(data)).save(
        validate(
            {
                "symbol_a": "BTCUSDT",
                "symbol_b": "ETHUSDT",
                "threshold": 1.0,
                "window": 10,
                "poll_interval_s": 1,
                "webhook_url": httpserver.url_for("/hook"),
            }
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "SOURCE": "binance",
        "BINANCE_BASE_URL": fake_binance.url,
        "DATA_DIR": str(data),
        "ALLOW_PRIVATE_WEBHOOKS": "1",  # the receiver is on loopback
    }
    with open(tmp_path / "gunicorn.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "app:server"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}/api"
            wait_http(f"{base}/health", timeout=60)
            pids, stop = set(), time.time() + 14
            start_calls, t0 = len(fake_binance.times["/api/v3/ticker/price"]), time.time()
            while time.time() < stop:
                with requests.Session() as s:  # new connections spread over both workers
                    pids.add(s.get(f"{base}/health", timeout=5).json()["worker_pid"])
                time.sleep(0.05)
            calls = len(fake_binance.times["/api/v3/ticker/price"]) - start_calls
            elapsed = time.time() - t0
            time.sleep(3)  # deliveries in flight
            alerts = csv_rows(requests.get(f"{base}/alerts.csv", timeout=5).text)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
    assert len(pids) == 2, "both workers answered"
    assert calls <= elapsed + 2, f"{calls} ticker calls in {elapsed:.1f} s with two workers"
    assert alerts, "|z| ≥ 1 over 10 s fires within 14 s"
    assert sorted(received) == sorted(int(a["id"]) for a in alerts), "each alert delivered exactly once"
