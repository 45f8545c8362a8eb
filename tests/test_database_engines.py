"""One code path on two engines: the embedded SQLite file and a real PostgreSQL server. The store's
guarantees on each, the schema's upgrade of a database made by the previous version, the copy
from SQLite into PostgreSQL, and PostgreSQL going away and coming back."""

import json
import math
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from cachelib import SimpleCache
from sqlalchemy import inspect
from test_database_truth import made_database

from app import create_app
from loopback import PostgresServer
from services import metrics
from services.alerts import Alert, AlertLog
from services.db import FILENAME, SCHEMA_VERSION, Database, DatabaseProblem, copy_database
from services.history import History
from services.market import MarketService
from services.settings import AppConfig, DatabaseDown, SettingsError, SettingsStore, parse_database_url
from services.sources import SimSource, Tick, utc_from_epoch

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_761_091_200
DEAD_URL = "postgresql+psycopg://u:p@127.0.0.1:9/none"  # nothing listens on port 9
PRICE = 65_432.123456789  # needs a double: a 4-byte float would store 65432.125

# The schema of the previous version (before PostgreSQL), as it made its SQLite files.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS buckets (
    source TEXT NOT NULL, symbol TEXT NOT NULL, second INTEGER NOT NULL,
    tick_ns INTEGER NOT NULL, price REAL NOT NULL,
    PRIMARY KEY (source, symbol, second)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticks (
    source TEXT NOT NULL, symbol TEXT NOT NULL, tick_ns INTEGER NOT NULL, price REAL NOT NULL,
    PRIMARY KEY (source, symbol, tick_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (
    id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_key TEXT NOT NULL, rule TEXT NOT NULL, pair TEXT NOT NULL, second INTEGER NOT NULL,
    value REAL, level REAL, zscore REAL, spread REAL, created_ns INTEGER NOT NULL,
    UNIQUE (rule_key, pair, second));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    position INTEGER PRIMARY KEY, a TEXT NOT NULL, b TEXT NOT NULL, body TEXT NOT NULL);
"""


def db_for(tmp_path, database_url) -> Database:
    return Database(tmp_path, parse_database_url(database_url))


def alert(second, rule_key="abs_z", pair="BTCUSDT/ETHUSDT"):
    return Alert(second, "|z| ≥ 2", rule_key, rule_key.split(":")[0], pair, 2.5, 2.0, 2.5, 0.1)


def every_row(db: Database) -> dict:
    """Each table's rows, in key order: what a copy or a restart must keep."""
    order = {"buckets": "source, symbol, second", "ticks": "source, symbol, tick_ns", "pairs": "position"}
    return {
        table: [tuple(r) for r in db.query(f"SELECT * FROM {table} ORDER BY {order.get(table, '1')}")]
        for table in ("buckets", "ticks", "settings", "alerts", "meta", "pairs")
    }


# --- the store's guarantees, on each engine ---------------------------------------------------
def test_history_keeps_exact_prices_and_nanoseconds_the_last_tick_of_a_second_and_prunes(tmp_path, database_url):
    db = db_for(tmp_path, database_url)
    h = History(db, "binance", span_s=100)
    late, early = (Tick("BTCUSDT", p, utc_from_epoch(T0 + s)) for p, s in ((PRICE, 10.9), (2.0, 10.1)))
    h.save([late, early], raw=[late, early])  # one save holding two ticks of one second
    h.save([Tick("BTCUSDT", 3.0, utc_from_epoch(T0 + 10.5))], raw=[])  # an older one, later: it loses
    h.save([Tick("BTCUSDT", 1.0, utc_from_epoch(s + 0.25)) for s in range(T0 - 300, T0)], raw=[])
    [bucket] = h.buckets("BTCUSDT", T0 + 10, T0 + 10)
    assert bucket == late and bucket.price == PRICE, "the last tick of the second, to the nanosecond and the bit"
    assert [t.price for t in h.recent_ticks("BTCUSDT", 5)] == [2.0, PRICE]
    assert History(db, "sim-7", 100).buckets("BTCUSDT", 0, 2 * T0) == [], "sources never mix"
    assert h.prune(T0 + 10) == 210
    assert [int(t.epoch) for t in h.buckets("BTCUSDT", 0, 2 * T0)][:2] == [T0 - 90, T0 - 89]


def test_an_alert_is_logged_once_whichever_host_logs_it_and_ids_go_on_after_a_clear(tmp_path, database_url):
    db_url = parse_database_url(database_url)
    here, there = AlertLog(Database(tmp_path, db_url)), AlertLog(Database(tmp_path, db_url))
    [first] = here.add([alert(T0)])
    [new] = there.add([alert(T0), alert(T0 + 60)])
    assert new.second == T0 + 60, "the other host logs only the new one"
    assert [a.second for a in here.log()] == [T0 + 60, T0] and math.isclose(here.log()[0].zscore, 2.5)
    assert here.count("BTCUSDT/ETHUSDT", since_s=T0 + 1) == 1
    assert there.last_fired("abs_z", "BTCUSDT/ETHUSDT") == T0 + 60
    here.clear()
    [after] = there.add([alert(T0 + 120)])
    assert after.id > first.id + 1 and here.since(first.id)[0].id == after.id, "ids never reused: no toast shown twice"


def test_the_log_keeps_its_caps_apart_for_real_and_test_alerts(tmp_path, database_url):
    log = AlertLog(db_for(tmp_path, database_url), max_rows=3, max_test_rows=2, prune_every=1)
    log.add([alert(T0 + i) for i in range(5)])
    log.add([alert(T0 + i, rule_key=f"test:{i}") for i in range(4)])
    assert [a.second for a in log.log()] == [T0 + 3, T0 + 2, T0 + 4, T0 + 3, T0 + 2], "the newest of each kind"


def test_two_hosts_changing_the_watchlist_at_once_lose_no_change(tmp_path, database_url):
    """A change is read, edited and written in one transaction; on PostgreSQL two hosts take turns
    by an advisory lock (SQLite's write lock does it there)."""
    db_url = parse_database_url(database_url)
    SettingsStore(Database(tmp_path, db_url)).seed(())
    stores = [SettingsStore(Database(tmp_path, db_url)) for _ in range(2)]
    errors = []

    def add(store, coin):
        try:
            for i in range(6):
                store.add_pair((f"{coin}{i}USDT", "BTCUSDT"))
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=add, args=(s, c)) for s, c in zip(stores, ("AAA", "BBB"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    book = SettingsStore(Database(tmp_path, db_url)).watchlist()
    assert len(book) == 13 and len({s.pair for s in book}) == 13, "every add of both hosts is kept"
    with pytest.raises(SettingsError, match="already in the watchlist"):
        stores[0].add_pair(("AAA0USDT", "BTCUSDT"))


# --- the schema's versions --------------------------------------------------------------------
def v1_database(tmp_path) -> Path:
    """An SQLite file as the previous version made it, with a row in every table."""
    path = tmp_path / FILENAME
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_V1)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executemany(
            "INSERT INTO buckets VALUES ('binance', 'BTCUSDT', ?, ?, ?)",
            [(T0 + s, (T0 + s) * 10**9 + 5, PRICE + s) for s in range(100)],
        )
        conn.execute("INSERT INTO ticks VALUES ('binance', 'BTCUSDT', ?, ?)", (T0 * 10**9 + 5, PRICE))
        body = json.dumps({"window": 90, "hedge": "ols"})
        conn.execute("INSERT INTO settings VALUES (1, ?, 4)", (body,))
        conn.execute("INSERT INTO pairs VALUES (0, 'SOLUSDT', 'BTCUSDT', ?)", (body,))
        conn.execute(
            "INSERT INTO alerts (rule_key, rule, pair, second, value, level, zscore, spread, created_ns) "
            "VALUES ('abs_z', '|z| ≥ 2', 'SOLUSDT/BTCUSDT', ?, 2.5, 2, 2.5, 0.1, 1)",
            (T0,),
        )
        conn.execute("INSERT INTO meta VALUES ('alert-cursor:x', '123')")
    return path


def test_a_database_of_the_previous_version_is_upgraded_in_place_and_keeps_every_row(tmp_path):
    path = v1_database(tmp_path)
    with sqlite3.connect(path) as conn:  # read as it is, without the app (which would upgrade it)
        before = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in ("buckets", "ticks", "meta")}
        before |= {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("settings", "alerts", "pairs")}
    db = Database(tmp_path)
    assert db.check().endswith("schema version 1")
    after = every_row(db)  # the first statement upgrades it
    assert db.check().endswith(f"schema version {SCHEMA_VERSION}")
    assert after == {**before, "meta": sorted([*before["meta"], ("schema_version", str(SCHEMA_VERSION))])}
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN DELETE FROM buckets WHERE second < 5"))
    assert {"buckets_by_second", "ticks_by_time"} <= indexes and "buckets_by_second" in plan, plan
    [pair] = SettingsStore(db).watchlist()
    assert pair.pair == ("SOLUSDT", "BTCUSDT") and pair.window == 90 and pair.hedge == "ols"
    assert AlertLog(db).add([alert(T0 + 5)])[0].id == 2, "new rows go on from the old ones"


def test_a_postgresql_database_missing_the_version_two_indexes_is_upgraded_in_place(tmp_path, postgres_url):
    """PostgreSQL support began with version 2; a database in version 1's shape (its tables, no
    indexes for pruning, no version recorded) takes the same upgrade and keeps its rows."""
    db = db_for(tmp_path, postgres_url)
    History(db, "binance", 10**9).save([Tick("BTCUSDT", PRICE, utc_from_epoch(T0))], [])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP INDEX buckets_by_second; DROP INDEX ticks_by_time; DELETE FROM meta")
    upgraded = db_for(tmp_path, postgres_url)
    assert upgraded.check().endswith("schema version 1")
    assert History(upgraded, "binance", 10**9).buckets("BTCUSDT", T0, T0)[0].price == PRICE
    with upgraded.connection() as conn:
        indexes = {i["name"] for t in ("buckets", "ticks") for i in inspect(conn).get_indexes(t)}
    assert {"buckets_by_second", "ticks_by_time"} <= indexes
    assert upgraded.meta("schema_version") == str(SCHEMA_VERSION)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_database_made_by_a_newer_version_is_refused_at_start_with_one_line(tmp_path, engine, request):
    url = request.getfixturevalue("postgres_url") if engine == "postgresql" else ""
    db = db_for(tmp_path, url)
    db.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(DatabaseProblem, match=f"newer version of the app \\(schema {SCHEMA_VERSION + 1}"):
        db_for(tmp_path, url).check()
    args = ["--source", "sim", "--data-dir", str(tmp_path)] + (["--database-url", url] if url else [])
    done = subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error: ") and "newer version" in last, done.stderr[-600:]


# --- PostgreSQL: configuration, the copy, and outages -----------------------------------------
def test_the_database_url_is_checked_and_its_password_never_shown(tmp_path, postgres_server):
    assert parse_database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    for bad in (
        "mysql://u:s3cret@h/db",
        "postgresql://u:s3cret@h",
        "postgresql://u:s3cret@h:x/db",
        "postgresql://u:s3cret@[::1/db",
    ):
        with pytest.raises(SettingsError) as caught:
            parse_database_url(bad)
        assert "s3cret" not in str(caught.value) and "must be postgresql://" in str(caught.value)
    wrong = postgres_server.url("postgres").replace(postgres_server.password, "wrong-s3cret")
    with pytest.raises(DatabaseProblem, match="password authentication failed") as caught:
        db_for(tmp_path, wrong).check()
    assert "s3cret" not in str(caught.value)
    url = postgres_server.new_database()
    db = db_for(tmp_path, url)
    assert postgres_server.password not in db.check() and postgres_server.password not in json.dumps(db.state())
    assert db.state()["where"] == f"postgresql://127.0.0.1:{postgres_server.port}/{url.rsplit('/', 1)[1]}"


def test_migrate_sqlite_to_copies_every_row_once_and_refuses_a_database_with_data(tmp_path, postgres_url):
    data = tmp_path / "data"
    made_database(data)  # a real one: settings, history, a test alert, cursors
    AlertLog(Database(data)).add([alert(T0 + i) for i in range(3)])
    source_rows = every_row(Database(data))
    assert all(source_rows[t] for t in ("buckets", "settings", "alerts", "pairs")), "a database worth copying"

    def migrate():
        return subprocess.run(
            [sys.executable, "app.py", "--data-dir", str(data), "--migrate-sqlite-to", postgres_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = migrate()
    assert done.returncode == 0, done.stderr[-800:]
    password = psycopg.conninfo.conninfo_to_dict(postgres_url)["password"]
    assert f"{len(source_rows['buckets']):,} buckets" in done.stderr and password not in done.stderr
    target = db_for(tmp_path, postgres_url)
    copied = every_row(target)
    assert copied == source_rows, "row by row, every table"
    again = migrate()
    assert again.returncode != 0 and "already holds data of this app (table alerts)" in again.stderr
    assert every_row(target) == copied, "a refused copy writes nothing"
    newest = max(r[0] for r in copied["alerts"])
    assert AlertLog(target).add([alert(T0 + 99)])[0].id == newest + 1, "new alerts' ids go on after the copied ones"


def test_a_copy_that_fails_midway_writes_nothing(tmp_path, postgres_url, monkeypatch):
    data = tmp_path / "data"
    some = [Tick("BTCUSDT", 1.0, utc_from_epoch(T0 + s)) for s in range(50)]
    History(Database(data), "binance", 10**9).save(some, some)
    AlertLog(Database(data)).add([alert(T0)])
    monkeypatch.setattr("services.db.COPY_BATCH", 7)
    target = db_for(tmp_path, postgres_url)
    target.query("SELECT 1")  # its schema made
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the last table copied refuses what it is given
        conn.execute("ALTER TABLE ticks ADD CONSTRAINT no_copy CHECK (tick_ns < 0)")
    with pytest.raises(Exception, match="no_copy"):
        copy_database(Database(data), target)
    counts = target.query("SELECT (SELECT count(*) FROM buckets), (SELECT count(*) FROM alerts)")[0]
    assert tuple(counts) == (0, 0), "all or nothing: what was copied before the failure went back too"


def test_postgresql_down_keeps_ticks_and_alerts_in_memory_and_writes_them_when_it_is_back(tmp_path, clock, monkeypatch):
    """The one server of this test is stopped under a running market and started again: ticks and
    alerts wait in memory (counted), health says so, and all of it is written after."""
    monkeypatch.setattr("services.db.RETRY_S", 0.0)  # each tick asks again (the test's clock is not the rest's)
    server = PostgresServer()
    try:
        url = parse_database_url(server.new_database())
        cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600, database_url=url)
        market = MarketService(cfg, SimpleCache(), clock=clock, source=SimSource(seed=7, span_s=3_600, clock=clock))
        settings = market.current_settings()
        for _ in range(5):
            clock.advance(1)
            market.tick()
        history = market.ingestion.history()
        stored = len(history.buckets("BTCUSDT", 0, int(clock())))
        assert stored >= 5 and market.snapshot().status.database["up"]
        server.stop()
        waiting = metrics.DB_UNWRITTEN.labels(kind="buckets")._value.get()
        for _ in range(12):
            clock.advance(1)
            market.tick()
        status = market.snapshot().status
        assert not status.database["up"] and status.database["down_since_utc"]
        assert status.database["unwritten"]["buckets"] >= 20, status.database  # 2 legs x 10+ s
        assert metrics.DB_UNWRITTEN.labels(kind="buckets")._value.get() - waiting >= 20
        assert int(market.store.last_tick("BTCUSDT").epoch) == int(clock()), "live prices go on from memory"
        with pytest.raises(DatabaseDown, match="nothing was saved"):
            market.save_settings({"threshold": 3.0})
        with pytest.raises(DatabaseDown, match="nothing was sent"):
            market.send_test_alert()
        market.alerting.log_and_deliver([alert(T0), alert(T0 + 1)], settings)  # and any the rules found
        waiting_alerts = set(market.alerting.unlogged.rows)
        assert {("abs_z", "BTCUSDT/ETHUSDT", T0 + 1)} < waiting_alerts
        assert market.snapshot().status.database["unwritten"]["alerts"] == len(waiting_alerts)
        server.start()
        clock.advance(1)
        market.tick()
        status = market.snapshot().status
        assert status.database["up"] and status.database["unwritten"] == {"alerts": 0, "buckets": 0, "ticks": 0}
        end = int(clock())
        seconds = [int(t.epoch) for t in history.buckets("BTCUSDT", end - 16, end)]
        assert seconds == list(range(end - 16, end + 1)), "every second of the outage was written"
        logged = {(a.rule_key, a.pair, a.second) for a in market.alerts.log()}
        assert logged == waiting_alerts, "every alert found while it was down is in the log"
    finally:
        server.remove()


def test_an_app_whose_postgresql_does_not_answer_serves_says_so_and_refuses_changes_with_a_503(tmp_path):
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), database_url=DEAD_URL))
    client = app.server.test_client()
    health = client.get("/api/health")
    assert health.status_code == 200 and health.get_json()["database"]["up"] is False
    for resp in (client.patch("/api/settings", json={"threshold": 3.0}), client.post("/api/alerts/test")):
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
        assert resp.get_json()["error"].startswith("The database does not answer; nothing was")
    assert client.get("/").status_code == 200 and client.get("/api/pairs").status_code == 200


def test_rows_past_the_bound_are_dropped_oldest_first_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr("services.db.RETRY_S", 0.0)
    db = Database(tmp_path / "gone", DEAD_URL)
    h = History(db, "binance", 10**9)
    monkeypatch.setattr(h.unwritten_bars, "limit", 5)
    dropped = metrics.DB_DROPPED.labels(kind="buckets")._value.get()
    for s in range(8):
        with pytest.raises(Exception):  # noqa: B017 - the driver's refusal, whatever its class
            h.save([Tick("BTCUSDT", float(s), utc_from_epoch(T0 + s))], [])
    assert [sec for _, sec in h.unwritten_bars.rows] == [T0 + s for s in range(3, 8)]
    assert metrics.DB_DROPPED.labels(kind="buckets")._value.get() - dropped == 3
    assert db.outage and "127.0.0.1" in db.outage
