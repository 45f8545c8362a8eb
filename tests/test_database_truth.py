"""The database tells the truth: a file the app can't use stops the start with one line and is
never modified; damage found while running shows on every page and in /api/health, and live data
goes on from memory."""

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from app import create_app
from components import ids
from dash_client import Tab
from loopback import free_port, start_sim_app, wait_until_serving
from services.db import FILENAME, Database
from services.settings import AppConfig


def made_database(data_dir: Path) -> Path:
    """A real database of this app, with a few minutes of history, checkpointed into the file."""
    app = create_app(AppConfig(source="sim", data_dir=str(data_dir), history_s=3_600))
    market = app.server.extensions["market"]
    client = app.server.test_client()
    assert client.get("/api/health").status_code == 200
    market.save_settings({"window": 30})
    client.post("/api/alerts/test")
    with sqlite3.connect(market.db.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return data_dir / FILENAME


def damage_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 8192))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2 + 100)


def foreign_sqlite(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


def foreign_file(path: Path) -> None:
    path.write_bytes(b"%PDF-1.7 not a database at all\n" * 200)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "spoil, says",
    [
        (damage_the_middle, "PRAGMA integrity_check"),
        (truncate, ""),  # damaged or unreadable, depending on where the cut falls
        (foreign_sqlite, "another application's database (tables invoices)"),
        (foreign_file, "not an SQLite database"),
    ],
)
def test_a_file_the_app_cant_use_stops_the_start_with_one_line_and_is_left_as_it_is(tmp_path, spoil, says):
    data = tmp_path / "data"
    path = made_database(data)
    for extra in data.glob(FILENAME + "-*"):
        extra.unlink()
    spoil(path)
    before = digest(path)
    proc = start_sim_app(data, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out[-500:]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: ") and says in last, out[-800:]
    assert any(word in last for word in ("damaged", "unreadable", "another application", "not an SQLite"))
    assert "move it aside" in last
    assert "Traceback" not in out
    assert digest(path) == before, "the file is never modified"


def test_a_data_dir_that_is_a_file_stops_the_start_with_one_line(tmp_path):
    data = tmp_path / "data"
    data.write_text("not a directory")
    proc = start_sim_app(data, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in out
    assert out.strip().splitlines()[-1] == f"error: {data}: the data dir is not a directory"


@pytest.mark.parametrize("empty", [True, False])
def test_a_0_byte_or_missing_file_starts_fresh_and_says_so(tmp_path, empty):
    data = tmp_path / "data"
    data.mkdir()
    if empty:
        (data / FILENAME).write_bytes(b"")
    port = free_port()
    proc = start_sim_app(data, port)
    try:
        wait_until_serving(proc, port)
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    said = "empty (0 bytes); a new database is made in it" if empty else "no database yet; a new one is made"
    assert said in out
    assert Database(data).query("SELECT count(*) FROM buckets")[0][0] > 0


def test_damage_found_while_running_shows_on_every_page_and_in_health_and_live_data_goes_on(tmp_path):
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    market = app.server.extensions["market"]
    client = app.server.test_client()
    assert client.get("/api/health").status_code == 200
    client.post("/api/alerts/test")
    time.sleep(1.1)
    client.get("/api/health")
    with sqlite3.connect(market.db.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_the_middle(market.db.path)
    market.db.engine().dispose()  # new connections read the damaged pages (a cache would hide them a while)
    time.sleep(5)  # a hole longer than the forward fill: the next tick looks for it in the database
    resp = client.get("/api/health")
    assert resp.status_code == 503 and resp.is_json
    health = resp.get_json()
    assert "malformed" in health["database_error"] and health["status"] == "ok", "live data still fresh"
    assert health["age_s"] < 1 and health["last_error"] is None, "the tick was stored in memory"

    def post(body):
        r = client.post("/_dash-update-component", json=body)
        return r.status_code, r.get_json()

    for path in ("/", "/live", "/analytics", "/backtest", "/settings"):
        shell = Tab(post, path).tick()
        banner = json.dumps(shell[ids.STATUS_BANNER])
        assert "The database is damaged" in banner and "malformed" in banner, path
        assert shell[ids.AGE_BADGE]["children"].startswith("live"), path
    first = market.snapshot().status.last_tick_utc
    for _ in range(3):
        time.sleep(1.1)
        health = client.get("/api/health").get_json()
        assert health["last_error"] is None, health["last_error"]
    assert market.snapshot().status.last_tick_utc > first, "prices keep coming in, in memory"
