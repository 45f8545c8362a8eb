"""The embedded store under `--data-dir`: one SQLite file in WAL mode, no server.

It holds what must survive a restart: the 1-second buckets and the raw tick log (pruned to the
configured span), the user's settings and the alert log. Every process (each gunicorn worker,
the headless collector) opens the same file. WAL lets readers go on while one writer commits;
writes take the lock up front (`BEGIN IMMEDIATE`) and are small (a poll's rows, or one backfill
batch), so no writer waits long, and `busy_timeout` makes a waiting one retry instead of failing.

Connections are pooled per process (a forked worker opens its own): a query or a write borrows an
idle connection and gives it back, so a server that runs each request on a new thread (the dev
server) does not open a connection per request.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
FILENAME = "dashboard.sqlite3"
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
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


SQLITE_MAGIC = b"SQLite format 3\x00"
TABLES = frozenset({"buckets", "ticks", "settings", "alerts", "meta", "pairs"})
WHAT_TO_DO = (
    "The file is left as it is: move it aside and start again for a new database (the history is "
    "backfilled from the exchange), or restore a backup"
)


class DatabaseProblem(Exception):
    """The database file can't be used; the message says what is wrong and what to do."""


class Database:
    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / FILENAME
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._ready = False
        self.fault: str | None = None  # the first sign of a damaged or failing file, while running

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        with self._lock:
            if not self._ready:
                self._initialise(conn)
                self._ready = True
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across a process kill
        return conn

    @contextmanager
    def connection(self):
        """An idle connection of this process's pool (a new one when all are busy), given back after."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        conn = conn or self._open()
        try:
            yield conn
        finally:
            with self._lock:
                if self._pid == os.getpid():
                    self._idle.append(conn)

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """WAL mode (kept in the file) and the tables, once per file. Processes starting together
        take turns with a file lock: switching to WAL needs the database to themselves."""
        with open(self.path.with_name(self.path.name + ".init-lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    @contextmanager
    def write(self):
        """A write transaction holding the database's one write lock from its start."""
        with self._noting_faults(), self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, args=()) -> list[tuple]:
        with self._noting_faults(), self.connection() as conn:
            return conn.execute(sql, args).fetchall()

    @contextmanager
    def _noting_faults(self):
        """Keep the first error that says the file itself is bad (not a busy lock), so that every
        page and /api/health can say so; the error still reaches the caller."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if self.fault is None and not str(exc).startswith(("database is locked", "database table is locked")):
                self.fault = f"{exc} (first seen {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})"
                log.error("database %s: %s", self.path, self.fault)
            raise

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
            )

    def check(self) -> str:
        """Before the app starts: is the file one it can use? Returns what was found, for the log,
        or raises DatabaseProblem. Reads only (the file is never modified here): a missing or
        0-byte file is a new database; anything else must be an SQLite file with this app's
        tables, that `PRAGMA integrity_check` passes, in a data dir the app can write."""
        where = self.path.parent
        if where.exists() and not where.is_dir():
            raise DatabaseProblem(f"{where}: the data dir is not a directory")
        if where.exists() and not os.access(where, os.W_OK | os.X_OK):
            raise DatabaseProblem(f"{where}: the data dir is not writable by this user; give it write access")
        if not self.path.exists():
            return f"{self.path}: no database yet; a new one is made"
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise DatabaseProblem(f"{self.path}: not readable and writable by this user; fix its permissions")
        size = self.path.stat().st_size
        if size == 0:
            return f"{self.path}: empty (0 bytes); a new database is made in it"
        with open(self.path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise DatabaseProblem(f"{self.path}: not an SQLite database (a foreign file). {WHAT_TO_DO}")
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                [(result,)] = conn.execute("PRAGMA integrity_check(1)").fetchall()
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise DatabaseProblem(f"{self.path}: unreadable ({exc}; {size:,} bytes). {WHAT_TO_DO}") from None
        if result != "ok":
            result = " ".join(result.split())  # one line
            raise DatabaseProblem(f"{self.path}: damaged (PRAGMA integrity_check: {result}). {WHAT_TO_DO}")
        foreign = {n for n in names if not n.startswith("sqlite_")} - TABLES
        if foreign:
            raise DatabaseProblem(
                f"{self.path}: another application's database (tables {', '.join(sorted(foreign))}). {WHAT_TO_DO}"
            )
        return f"{self.path}: {size:,} bytes, integrity check ok"

    def journal_mode(self) -> str:
        return self.query("PRAGMA journal_mode")[0][0]
