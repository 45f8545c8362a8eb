"""The store: price history, settings, the watchlist and the alert log, on one of two engines.

By default it is one SQLite file under `--data-dir` in WAL mode, no server. With `--database-url`
it is PostgreSQL, which several hosts share. Both run one code path, SQLAlchemy 2 Core, with the
tables defined once below; the few statements whose spelling differs (an upsert, a lock) come
from here.

SQLite: every process (each gunicorn worker, the headless collector) opens the same file. WAL lets
readers go on while one writer commits. Writes take the lock up front (`BEGIN IMMEDIATE`) and are
small (a poll's rows, or one backfill batch), so no writer waits long, and `busy_timeout` makes a
waiting one retry instead of failing.

PostgreSQL: a pool of connections per process, checked before use (a restarted server is
reconnected to, not failed on). A server that does not answer is an outage (`Database.outage`,
cleared by the next statement that succeeds), not damage: the callers keep what they could not
write and write it later.

The schema is versioned (`meta.schema_version`): a database made by an older version is upgraded
in place when a process first connects, keeping its data; one made by a newer version is refused.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url

from services import metrics

log = logging.getLogger(__name__)
FILENAME = "dashboard.sqlite3"
BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 3  # PostgreSQL: a server that does not answer is an outage after this, not a hang

PULSE_EVERY_S = 1.0  # a write in another process shows within this long (Pulse)

# What a failed statement raises: the driver's error (wrapped by SQLAlchemy), or no connection free
# in the pool in time. Callers that must go on without the database catch these.
RETRY_S = 1.0  # PostgreSQL down: each process tries it again at most this often, failing at once in between


class Unreachable(Exception):
    """The database did not answer a moment ago: not tried again yet."""


FAILURES = (sa_exc.DBAPIError, sa_exc.TimeoutError, Unreachable)

metadata = MetaData()
buckets = Table(
    "buckets",
    metadata,
    Column("source", Text, primary_key=True),
    Column("symbol", Text, primary_key=True),
    Column("second", BigInteger, primary_key=True, autoincrement=False),
    Column("tick_ns", BigInteger, nullable=False),
    Column("price", Double, nullable=False),
    sqlite_with_rowid=False,
)
ticks = Table(
    "ticks",
    metadata,
    Column("source", Text, primary_key=True),
    Column("symbol", Text, primary_key=True),
    Column("tick_ns", BigInteger, primary_key=True, autoincrement=False),
    Column("price", Double, nullable=False),
    sqlite_with_rowid=False,
)
settings = Table(
    "settings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    CheckConstraint("id = 1"),
)
alerts = Table(
    "alerts",
    metadata,
    # SQLite: INTEGER PRIMARY KEY AUTOINCREMENT (ids never reused, also after the log is cleared)
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("rule_key", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("pair", Text, nullable=False),
    Column("second", BigInteger, nullable=False),
    Column("value", Double),
    Column("level", Double),
    Column("zscore", Double),
    Column("spread", Double),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("rule_key", "pair", "second"),
    sqlite_autoincrement=True,
)
meta = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))
pairs = Table(
    "pairs",
    metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("a", Text, nullable=False),
    Column("b", Text, nullable=False),
    Column("body", Text, nullable=False),
)
# Version 2: pruning deletes by time, which the primary keys (source and symbol first) can't find
# without reading every row.
PRUNE_INDEXES = (Index("buckets_by_second", buckets.c.second), Index("ticks_by_time", ticks.c.tick_ns))

SCHEMA_VERSION = 2
VERSION_KEY = "schema_version"
TABLES = frozenset(metadata.tables)
SQLITE_MAGIC = b"SQLite format 3\x00"
WHAT_TO_DO = (
    "The file is left as it is: move it aside and start again for a new database (the history is "
    "backfilled from the exchange), or restore a backup"
)


class Backlog:
    """Rows a write could not store (the database did not answer), kept by key to go with the
    next write: at most `limit`, the oldest dropped first, both counted in /metrics."""

    def __init__(self, kind: str, limit: int):
        self.kind, self.limit = kind, limit
        self.rows: dict = {}

    def keep(self, rows: dict) -> None:
        """Hold `rows` (key -> row, oldest first), the unwritten rows of a failed write."""
        before = len(self.rows)
        self.rows = rows
        over = len(rows) - self.limit
        if over > 0:
            for key in list(rows)[:over]:
                del rows[key]
            metrics.DB_DROPPED.labels(kind=self.kind).inc(over)
            log.error("%d unwritten %s rows dropped: the database has not answered for too long", over, self.kind)
        metrics.DB_UNWRITTEN.labels(kind=self.kind).inc(len(self.rows) - before)

    def clear(self) -> None:
        """Written."""
        metrics.DB_UNWRITTEN.labels(kind=self.kind).dec(len(self.rows))
        self.rows = {}


class Pulse:
    """The few values every process looks at once a second (the settings' version, the webhook's
    last delivery, the newest alert's id), each a one-value read, read in one statement instead of
    one each. A reader asks for its value; the first ask after the values are `PULSE_EVERY_S` old
    reads them all again. A value this process has just written is noted (`saw`), so that it
    shows here at once, and in every other process within a second."""

    def __init__(self, db: Database):
        self.db = db
        self._reads: dict = {}  # name -> a scalar subquery
        self._statement = select()  # built once: half the cost of the read is building it
        self._values: dict = {}
        self._read_at = -math.inf  # time.monotonic() of the last read

    def watch(self, name: str, statement) -> None:
        """Read `statement` (a select of one value; no row reads as None) with the others."""
        self._reads[name] = statement.scalar_subquery()
        self._statement = select(*(read.label(n) for n, read in self._reads.items()))
        self._read_at = -math.inf

    def value(self, name: str):
        """`name`'s value, at most PULSE_EVERY_S old (or the last one read, while the database
        can't be read). Raises what the database raised, or Unreachable before any read worked."""
        now = time.monotonic()
        if now - self._read_at >= PULSE_EVERY_S:
            self._read_at = now  # a read that failed is not tried again within the second either
            row = self.db.query(self._statement)[0]
            self._values = dict(zip(self._reads, row))
        if name not in self._values:
            raise Unreachable("not read yet")
        return self._values[name]

    def saw(self, name: str, value) -> None:
        """This process wrote `value` for `name`."""
        self._values = {**self._values, name: value}


class DatabaseProblem(Exception):
    """The database can't be used; the message says what is wrong and what to do."""


class Database:
    def __init__(self, data_dir: str | os.PathLike, url: str = ""):
        """The SQLite file under `data_dir`, or the PostgreSQL database at `url` (see
        parse_database_url)."""
        self.path = Path(data_dir) / FILENAME
        self.url = url
        self.is_sqlite = not url
        self._lock = threading.Lock()
        self._engine = None
        self._pid = None
        self._ready = False
        self.fault: str | None = None  # SQLite: the first sign of a damaged or failing file, while running
        self.outage: str | None = None  # PostgreSQL: why the last statement failed to reach it, until one does
        self.down_since: str | None = None  # when the outage began (UTC)
        self._retry_at = 0.0  # time.monotonic() after which a database that did not answer is asked again
        self.pulse = Pulse(self)

    @property
    def shown_url(self) -> str:
        """Where the data is, as logs and pages may show it (no password)."""
        if self.is_sqlite:
            return str(self.path)
        url = make_url(self.url)
        return URL.create("postgresql", host=url.host, port=url.port, database=url.database).render_as_string()

    def engine(self):
        """This process's engine. A forked worker's pool starts empty: the parent's connections are
        left to the parent (closing one here would end it there too)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._make_engine()
            elif self._pid != os.getpid():
                self._engine.dispose(close=False)
            self._pid = os.getpid()
            return self._engine

    def _make_engine(self):
        if not self.is_sqlite:
            return create_engine(
                self.url,
                pool_size=5,
                max_overflow=10,
                pool_timeout=10,
                pool_pre_ping=True,  # a server restarted since the connection was made: reconnect
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "pair-monitor"},
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{self.path}",
            pool_size=5,
            max_overflow=-1,  # a server that runs each request on a thread: never wait for a connection
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _connected(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy begins and ends transactions, not pysqlite
            dbapi_conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            dbapi_conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across a process kill

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine

    @contextmanager
    def connection(self):
        """A connection of this process's pool, made ready (tables, upgrades) on first use.
        Unreachable while a server that did not answer rests (a dead host's connect timeout is
        paid once a RETRY_S, not by every request)."""
        if self.outage is not None and time.monotonic() < self._retry_at:
            raise Unreachable(f"the database does not answer: {self.outage}")
        engine = self.engine()
        if not self._ready:
            self._initialise(engine)
        with engine.connect() as conn:
            yield conn

    def _initialise(self, engine) -> None:
        """Tables, indexes and upgrades, once per database. Processes starting together take turns:
        SQLite with a file lock (switching to WAL needs the file to themselves), PostgreSQL with an
        advisory lock held by the transaction that makes the schema."""
        with self._lock:
            if self._ready:
                return
            if self.is_sqlite:
                with open(self.path.with_name(self.path.name + ".init-lock"), "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    raw = engine.raw_connection()  # outside any transaction, as the switch must be
                    try:
                        if raw.driver_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                            raw.driver_connection.execute("PRAGMA journal_mode = WAL")
                    finally:
                        raw.close()
                    with engine.connect().execution_options(write=True) as conn, conn.begin():
                        _make_schema(conn, self.shown_url)
            else:
                with engine.begin() as conn:
                    conn.execute(select(text("pg_advisory_xact_lock(:k)")), {"k": _lock_key("schema")})
                    _make_schema(conn, self.shown_url)
            self._ready = True

    @contextmanager
    def write(self, lock: str | None = None):
        """A write transaction. SQLite takes the database's one write lock from its start. On
        PostgreSQL, `lock` names a read-then-write that two hosts must not interleave: the
        transaction holds that name's advisory lock (SQLite's one write lock already serialises)."""
        with self._noting_faults(), self.connection() as conn:
            conn = conn.execution_options(write=True) if self.is_sqlite else conn
            with conn.begin():
                if lock and not self.is_sqlite:
                    conn.execute(select(text("pg_advisory_xact_lock(:k)")), {"k": _lock_key(lock)})
                yield conn

    def query(self, statement, params=None) -> list:
        """The rows of a read: a Core statement, or SQL text with :named parameters."""
        statement = text(statement) if isinstance(statement, str) else statement
        with self._noting_faults(), self.connection() as conn:
            return conn.execute(statement, params or {}).all()

    def state(self) -> dict:
        """What /api/health says about the database: which engine, where (no password), and
        whether it answered the last statement."""
        return {
            "engine": "sqlite" if self.is_sqlite else "postgresql",
            "where": self.shown_url,
            "up": self.outage is None,
            "down_since_utc": self.down_since if self.outage else None,
            "reason": self.outage,
        }

    def journal_mode(self) -> str:
        return self.query("PRAGMA journal_mode")[0][0]

    @contextmanager
    def _noting_faults(self):
        """SQLite: keep the first error that says the file itself is bad (not a busy lock), so that
        every page and /api/health can say so. PostgreSQL: a server that can't be reached is an
        outage until a statement succeeds again. The error still reaches the caller."""
        try:
            yield
        except FAILURES as exc:
            self._note(exc)
            raise
        if self.outage is not None:
            log.warning("database %s answers again", self.shown_url)
            self.outage = None

    def _note(self, exc: Exception) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.is_sqlite:
            orig = str(getattr(exc, "orig", exc))
            if self.fault is None and not orig.startswith(("database is locked", "database table is locked")):
                self.fault = f"{orig} (first seen {when})"
                log.error("database %s: %s", self.path, self.fault)
        elif isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
            self._retry_at = time.monotonic() + RETRY_S
            if self.outage is None:
                self.outage, self.down_since = " ".join(str(getattr(exc, "orig", exc)).split())[:200], when
                log.error("database %s does not answer: %s", self.shown_url, self.outage)

    def meta(self, key: str) -> str | None:
        rows = self.query(select(meta.c.value).where(meta.c.key == key))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            set_meta(conn, key, value)

    def check(self) -> str:
        """Before the app starts: is the database one it can use? Returns what was found, for the
        log, or raises DatabaseProblem. Reads only (nothing is modified here)."""
        if not self.is_sqlite:
            return self._check_server()
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
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            [(result,)] = conn.execute("PRAGMA integrity_check(1)").fetchall()
            if result != "ok":
                result = " ".join(result.split())  # one line
                raise DatabaseProblem(f"{self.path}: damaged (PRAGMA integrity_check: {result}). {WHAT_TO_DO}")
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            foreign = {n for n in names if not n.startswith("sqlite_")} - TABLES
            if foreign:
                raise DatabaseProblem(
                    f"{self.path}: another application's database (tables {', '.join(sorted(foreign))}). {WHAT_TO_DO}"
                )
            version = _found_version(
                names, lambda: conn.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
            )
        except sqlite3.DatabaseError as exc:
            raise DatabaseProblem(f"{self.path}: unreadable ({exc}; {size:,} bytes). {WHAT_TO_DO}") from None
        finally:
            conn.close()
        _refuse_newer(self.path, version)
        return f"{self.path}: {size:,} bytes, integrity check ok, schema version {version or 'new'}"

    def _check_server(self) -> str:
        """PostgreSQL: a server that refuses these credentials or has no such database stops the
        start; one that does not answer yet does not (the app starts, and says it is waiting)."""
        shown = self.shown_url
        try:
            with self.engine().connect() as conn:
                names = set(inspect(conn).get_table_names())
                version = _found_version(
                    names, lambda: conn.execute(select(meta.c.value).where(meta.c.key == VERSION_KEY)).first()
                )
        except sa_exc.DBAPIError as exc:
            reason = " ".join(str(exc.orig).split())[:300]
            if _refused(reason):  # the server answered: wrong password, no such database...
                raise DatabaseProblem(f"{shown}: {reason}") from None
            return f"{shown}: does not answer yet ({reason}); the app starts and writes once it does"
        foreign = names - TABLES
        if foreign and not names & TABLES:
            raise DatabaseProblem(
                f"{shown}: another application's database (tables {', '.join(sorted(foreign)[:10])}); "
                "give the app a database of its own"
            )
        _refuse_newer(shown, version)
        return f"{shown}: PostgreSQL, schema version {version or 'new'}"


def _refused(reason: str) -> bool:
    """Whether a failed connection was the server refusing this configuration (a wrong password,
    no such database or role, not allowed from here), not a server down or busy for a while."""
    passing = ("starting up", "shutting down", "too many", "recovery mode")
    return "FATAL:" in reason and not any(p in reason for p in passing)


def _lock_key(name: str) -> int:
    """A stable 32-bit advisory lock number for `name` (one app's locks; no other app's collide in practice)."""
    return zlib.crc32(f"pair-monitor:{name}".encode())


def _found_version(names, read_row) -> int:
    """The schema version of a database with these tables: 0 when it has none of them (new), 1 for
    the first version (no version recorded), else as recorded."""
    if not names & TABLES:
        return 0
    row = read_row() if "meta" in names else None
    return int(row[0]) if row else 1


def _refuse_newer(where, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise DatabaseProblem(
            f"{where}: made by a newer version of the app (schema {version}; this version knows up to "
            f"{SCHEMA_VERSION}). Run the newer version, or restore a backup made by this one"
        )


def insert(conn, table: Table):
    """An INSERT that can say what to do ON CONFLICT, in the connection's dialect."""
    return dialect_insert(conn.dialect.name, table)


def dialect_insert(dialect: str, table: Table):
    """`insert` in the dialect named `dialect` ("sqlite" or "postgresql")."""
    return (sqlite_dialect if dialect == "sqlite" else pg_dialect).insert(table)


def set_meta(conn, key: str, value: str) -> None:
    set_metas(conn, {key: value})


def set_metas(conn, values: dict[str, str]) -> None:
    """Upsert several meta rows in one statement."""
    if not values:
        return
    stmt = insert(conn, meta)
    stmt = stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": stmt.excluded.value})
    conn.execute(stmt, [{"key": k, "value": v} for k, v in values.items()])


def _make_schema(conn, where: str) -> None:
    """Make what is missing, and upgrade an older schema in place, in the caller's transaction."""
    names = set(inspect(conn).get_table_names())
    version = _found_version(names, lambda: conn.execute(select(meta.c.value).where(meta.c.key == VERSION_KEY)).first())
    _refuse_newer(where, version)
    metadata.create_all(conn, checkfirst=True)  # a new database, or a table a version added
    if 0 < version < 2:
        log.info("database: upgrading schema %d to %d (indexes for pruning)", version, SCHEMA_VERSION)
        for index in PRUNE_INDEXES:
            index.create(conn, checkfirst=True)
    if version != SCHEMA_VERSION:
        set_meta(conn, VERSION_KEY, str(SCHEMA_VERSION))


COPY_BATCH = 5_000


def copy_database(source: Database, target: Database) -> dict[str, int]:
    """Copy every row of `source` into `target` (both made or upgraded to this version's schema
    first) in one transaction: all of it or, on any error, none. `target` must hold no data of
    this app yet. Returns the rows copied per table."""
    counts = {}
    with target.write(lock="schema") as dst, source.connection() as src:
        for table in metadata.sorted_tables:
            if dst.execute(_rows_of(table).limit(1)).first() is not None:
                raise DatabaseProblem(
                    f"{target.shown_url}: already holds data of this app (table {table.name}); "
                    "copy into an empty database"
                )
        for table in metadata.sorted_tables:
            counts[table.name] = 0
            for batch in src.execute(_rows_of(table)).mappings().partitions(COPY_BATCH):
                dst.execute(table.insert(), [dict(row) for row in batch])
                counts[table.name] += len(batch)
        if dst.dialect.name == "postgresql":  # new alerts' ids go on after the copied ones
            dst.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('alerts', 'id'), coalesce(max(id), 0) + 1, false) FROM alerts"
                )
            )
    return counts


def _rows_of(table: Table):
    """A table's rows to copy: the schema version is the target's own."""
    return select(table).where(meta.c.key != VERSION_KEY) if table is meta else select(table)
