"""Configuration: how the process runs (`AppConfig`, from CLI flags and env vars) and what the
user chose (`UserSettings`, edited on /settings, persisted in the embedded database).

Validation lives here, once, for the UI and the HTTP API alike: bad input raises
`SettingsError` with a message meant for a person, and nothing saved is touched.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.alerts import DEFAULT_RULES, LEGS, RULE_KINDS, Rule
from services.bars import TIMEFRAMES
from services.binance import DEFAULT_BASE_URL, DEFAULT_STREAM_URL, KNOWN_HOSTS, MARKET_DATA_URL
from services.db import FAILURES, Database, insert
from services.db import pairs as pair_rows
from services.db import settings as settings_rows
from services.hedge import METHODS

WINDOW_RANGE = (2, 86_400)
POLL_RANGE = (0.5, 60.0)
COOLDOWN_MAX_S = 86_400
MAX_RULES = 20
THRESHOLD_RANGE = (0.01, 100.0)  # |z| below 0.01 is every bar, beyond 100 never: both are typos
SHOWN_MAX = 80  # an echoed input is cut to this many characters
VERSION = "settings:version"  # looked at once a second, with the other values of the database's Pulse


class SettingsError(ValueError):
    """Invalid user input; the message is shown to the user as is."""


class DatabaseDown(SettingsError):
    """The database did not answer: nothing was saved (a 503 from the API, a message on a page)."""

    def __init__(self, what: str = "saved"):
        super().__init__(f"The database does not answer; nothing was {what}. Try again in a moment")


@dataclass(frozen=True)
class AppConfig:
    source: str = "auto"  # auto | binance | stream | sim | replay
    binance_url: str = DEFAULT_BASE_URL
    stream_url: str = DEFAULT_STREAM_URL  # Binance's market streams, for --source stream
    fallback_urls: tuple[str, ...] = (MARKET_DATA_URL,)  # tried in order after an HTTP 451
    host: str = "127.0.0.1"
    port: int = 8050
    data_dir: str = "data"
    debug: bool = False
    history_s: int = 86_400  # bounded history span
    ffill_s: int = 3  # forward-fill at most this many empty seconds
    sim_seed: int = 7
    replay: tuple[str, ...] = ()  # recordings for --source replay
    replay_speed: str = "1"
    allow_private_webhooks: bool = False  # webhooks may go to private and loopback addresses
    allowed_hosts: tuple[str, ...] = ()  # Host header names served besides loopback and --host
    pairs: tuple[tuple[str, str], ...] = ()  # the watchlist on the first start (--pairs)
    cache_url: str = ""  # redis://host:port/db: the cache every host shares; "" = the file cache under data_dir
    users_file: str = ""  # who may sign in, and their roles (services.auth)
    trust_proxy_auth: bool = False  # the reverse proxy names the user in X-Forwarded-User
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-* headers are read
    insecure_no_auth: bool = False  # beyond loopback with no login, on purpose (said on every page)
    database_url: str = ""  # postgresql+psycopg://...: the database every host shares; "" = SQLite under data_dir

    def rest_hosts(self) -> tuple[str, ...]:
        """The REST hosts the app may talk to: the known Binance hosts, --binance-url and
        --fallback-urls. A host saved in the settings is always one of these."""
        hosts = [*KNOWN_HOSTS, self.binance_url, *self.fallback_urls]
        return tuple(dict.fromkeys(h.rstrip("/") for h in hosts))


@dataclass(frozen=True)
class UserSettings:
    symbol_a: str = "BTCUSDT"
    symbol_b: str = "ETHUSDT"
    threshold: float = 2.0
    window: int = 60
    poll_interval_s: float = 1.0
    hedge: str = "none"
    timeframe: str = "1s"
    log_prices: bool = False
    rules: tuple[Rule, ...] = field(default=DEFAULT_RULES)
    webhook_url: str = ""  # alerts are POSTed here as JSON when set
    binance_url: str = ""  # the REST host chosen on /settings (e.g. after a 451); "" = --binance-url

    @property
    def pair(self) -> tuple[str, str]:
        return (self.symbol_a, self.symbol_b)

    @property
    def pair_label(self) -> str:
        return f"{self.symbol_a}/{self.symbol_b}"


def shown(value) -> str:
    """`value` as a message quotes it: its repr, cut to SHOWN_MAX characters (a 10 KB input is
    not sent back)."""
    text = repr(value)
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 1] + "…"


def parse_float(value, name: str) -> float:
    if isinstance(value, bool):  # JSON true is not a number (Python would read it as 1.0)
        raise SettingsError(f"{name} must be a number, got {shown(value)}")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{name} is required")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {shown(value)}") from None
    if not math.isfinite(x):
        raise SettingsError(f"{name} must be a finite number, got {shown(value)}")
    return x


def parse_threshold(value) -> float:
    x = parse_float(value, "Threshold")
    lo, hi = THRESHOLD_RANGE
    if not lo <= x <= hi:
        raise SettingsError(f"Threshold must be from {lo:g} to {hi:g}, got {shown(value)}")
    return x


def parse_window(value) -> int:
    x = parse_float(value, "Window")
    if x != int(x) or not WINDOW_RANGE[0] <= x <= WINDOW_RANGE[1]:
        raise SettingsError(
            f"Window must be a whole number of buckets from {WINDOW_RANGE[0]} to {WINDOW_RANGE[1]}, got {shown(value)}"
        )
    return int(x)


def parse_poll_interval(value) -> float:
    x = parse_float(value, "Poll interval")
    if not POLL_RANGE[0] <= x <= POLL_RANGE[1]:
        raise SettingsError(f"Poll interval must be from {POLL_RANGE[0]} to {POLL_RANGE[1]} s, got {shown(value)}")
    return x


def parse_choice(value, choices, name: str) -> str:
    text = str(value if value is not None else "").strip().lower()
    if text not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
    return text


def parse_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {shown(value)}")


def parse_symbol(value, known, name: str = "Symbol") -> str:
    sym = str(value or "").strip().upper()
    if not sym:
        raise SettingsError(f"{name} is required")
    if known is not None and sym not in known:
        raise SettingsError(f"{name} {shown(sym)} is not a symbol trading on this source")
    return sym


def parse_url(value, name: str = "URL", required: bool = False) -> str:
    """An http(s) URL with a host, or "" when not required and left empty."""
    text = str(value or "").strip()
    if not text:
        if required:
            raise SettingsError(f"{name} is required")
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// address with a host, got {shown(text)}")
    return text


def shown_webhook(url: str) -> str:
    """A webhook URL as the API, /api/health, logs and viewers may see it: its origin, and "/…"
    for the rest (a receiver's path or query often holds its secret token)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unreadable URL)"
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def shown_url(url: str) -> str:
    """A URL as logs, /api/health and messages may show it: without a user or password (also when
    it does not parse)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/?#]*@", r"\1", url, flags=re.IGNORECASE)


def parse_cache_url(value) -> str:
    """A Redis URL, redis:// or rediss:// with a host (and a db number, if any); "" for the file
    cache under the data dir."""
    text = str(value or "").strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        db = parts.path.strip("/")
        ok = parts.scheme in ("redis", "rediss") and parts.hostname and parts.port != 0 and (not db or db.isdigit())
    except ValueError:  # a port that is not a number, a bracket left open
        ok = False
    if not ok:
        raise SettingsError(
            f"the cache URL must be redis://[:password@]host[:port][/db] or rediss://..., got {shown(shown_url(text))}"
        )
    return text


def parse_database_url(value) -> str:
    """A PostgreSQL URL (postgresql://user:password@host[:port]/database, postgres:// too), spelt
    for psycopg 3; "" for the SQLite file under the data dir."""
    text = str(value or "").strip()
    if not text:
        return ""
    try:
        url = make_url(text)
        ok = (
            url.drivername in ("postgresql", "postgres", "postgresql+psycopg")
            and bool(url.host)
            and bool(url.database)
            and url.port != 0
        )
    except (ArgumentError, ValueError):  # not a URL, a port that is not a number
        ok = False
    if not ok:
        raise SettingsError(
            f"the database URL must be postgresql://user:password@host[:port]/database, got {shown(shown_url(text))}"
        )
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def parse_rule(raw) -> Rule:
    """A Rule from a dict of user input (strings or numbers)."""
    if isinstance(raw, Rule):
        raw = asdict(raw)
    if not isinstance(raw, dict):
        raise SettingsError(f"An alert rule must be a set of fields, got {shown(raw)}")
    kind = parse_choice(raw.get("kind"), tuple(RULE_KINDS), "Rule type")
    z = Rule(kind).is_z
    level = None if z else parse_float(raw.get("level"), "Rule level")
    if kind.startswith("spread") or z:
        leg = "A"
    else:
        leg = str(raw.get("leg") or "A").strip().upper()
        if leg not in LEGS:
            raise SettingsError(f"Rule leg must be A or B, got {shown(raw.get('leg'))}")
    hysteresis = parse_float(raw.get("hysteresis") or 0, "Hysteresis")
    if hysteresis < 0:
        raise SettingsError(f"Hysteresis must be 0 or more, got {shown(raw.get('hysteresis'))}")
    cooldown = parse_float(raw.get("cooldown_s") or 0, "Cooldown")
    if cooldown != int(cooldown) or not 0 <= cooldown <= COOLDOWN_MAX_S:
        raise SettingsError(
            f"Cooldown must be a whole number of seconds from 0 to {COOLDOWN_MAX_S}, got {shown(raw.get('cooldown_s'))}"
        )
    return Rule(kind, level, leg, hysteresis, int(cooldown))


def parse_rules(raw) -> tuple[Rule, ...]:
    if not isinstance(raw, (list, tuple)):
        raise SettingsError(f"Alert rules must be a list, got {shown(raw)}")
    rules = tuple(parse_rule(r) for r in raw)
    if len(rules) > MAX_RULES:
        raise SettingsError(f"At most {MAX_RULES} alert rules")
    if len({r.key for r in rules}) < len(rules):
        raise SettingsError("That rule is already in the list")
    return rules


def parse_rest_host(value, hosts) -> str:
    """The empty string (the --binance-url) or one of `hosts` (None: any http(s) URL, for a saved row)."""
    url = parse_url(value, "Binance base URL").rstrip("/")
    if url and hosts is not None and url not in hosts:
        raise SettingsError(f"Binance base URL must be one of {', '.join(hosts)}, got {shown(url)}")
    return url


def validate(raw: dict, known_symbols=None, rest_hosts=None) -> UserSettings:
    """Build UserSettings from user input (strings or numbers), or raise SettingsError.
    `known_symbols` and `rest_hosts` bound the symbols and the REST host when given."""
    a = parse_symbol(raw.get("symbol_a"), known_symbols, "Symbol A")
    b = parse_symbol(raw.get("symbol_b"), known_symbols, "Symbol B")
    if a == b:
        raise SettingsError(f"The two symbols must differ (both are {shown(a)})")
    settings = UserSettings(
        a,
        b,
        parse_threshold(raw.get("threshold")),
        parse_window(raw.get("window")),
        parse_poll_interval(raw.get("poll_interval_s")),
        parse_choice(raw.get("hedge", "none"), METHODS, "Hedge method"),
        parse_choice(raw.get("timeframe", "1s"), tuple(TIMEFRAMES), "Timeframe"),
        parse_bool(raw.get("log_prices", False), "Log prices"),
        parse_rules(raw.get("rules", DEFAULT_RULES)),
        parse_url(raw.get("webhook_url"), "Webhook URL"),
        parse_rest_host(raw.get("binance_url"), rest_hosts),
    )
    for rule in settings.rules:
        if rule.kind == "abs_z" and rule.hysteresis >= settings.threshold:
            raise SettingsError(
                f"The |z| rule's hysteresis ({rule.hysteresis:g}) must be below the threshold "
                f"({settings.threshold:g}), or it would never re-arm"
            )
    return settings


PAIR_FIELDS = ("symbol_a", "symbol_b", "threshold", "window", "hedge", "timeframe", "log_prices", "rules")
MAX_PAIRS = 20
PAIR_RE = re.compile(r"^([A-Z0-9]{2,20})-([A-Z0-9]{2,20})$")


def parse_pair(value) -> tuple[str, str]:
    """A pair as URLs and the API write it, "BTCUSDT-ETHUSDT" (any case) -> ("BTCUSDT", "ETHUSDT")."""
    match = PAIR_RE.match(str(value or "").strip().upper()) if isinstance(value, str) else None
    if match is None:
        raise SettingsError(f"A pair is two symbols joined by '-', e.g. BTCUSDT-ETHUSDT; got {shown(value)}")
    if match[1] == match[2]:
        raise SettingsError(f"The two symbols must differ (both are {shown(match[1])})")
    return match[1], match[2]


def query_pair(search) -> str | None:
    """The raw value of ?pair= in a URL's query string ("?pair=A-B&..."), or None."""
    return parse_qs(search.lstrip("?")).get("pair", [None])[0] if isinstance(search, str) else None


def pair_in(value) -> tuple[str, str] | None:
    """A page's ?pair= (a layout's `pair` argument, or `query_pair` of its URL) as a pair; None
    when there is none, or it is not a pair (the page then shows the first pair)."""
    try:
        return parse_pair(value) if value else None
    except SettingsError:
        return None


def parse_pairs(value) -> tuple[tuple[str, str], ...]:
    """--pairs / PAIRS: "BTCUSDT-ETHUSDT,SOLUSDT-BNBUSDT" ("" for none)."""
    pairs = tuple(parse_pair(p) for p in str(value or "").split(",") if p.strip())
    if len(pairs) > MAX_PAIRS:
        raise SettingsError(f"At most {MAX_PAIRS} pairs are watched, got {len(pairs)}")
    if len({frozenset(p) for p in pairs}) < len(pairs):
        raise SettingsError("A pair is listed twice")
    return pairs


def pair_name(pair) -> str:
    return "-".join(pair)


class SettingsStore:
    """The settings and the watchlist, persisted in the embedded database with one version number.

    The watchlist is a list of pairs, each with its own analysis (threshold, window, hedge,
    timeframe, log prices) and alert rules; the poll interval, the webhook and the REST host are
    shared by all. Each pair reads as a `UserSettings` (its fields and the shared ones); the first
    pair is `current()`, the one a page shows when it names none. The `settings` row holds the
    first pair's UserSettings (the format of earlier versions), the `pairs` table every pair.

    The version is looked at at most once a second (with the database's `Pulse`, not once per
    tab's tick) and the rows re-read only when it changed: a change shows at once in the process that made
    it, and within a second in every other. Every change is one transaction: a crash mid-save
    leaves the old settings. A `settings.json` from an older version is taken over once.
    """

    def __init__(self, db: Database, legacy_dir=None):
        self.db = db
        self.legacy = Path(legacy_dir) / "settings.json" if legacy_dir is not None else None
        self._lock = threading.Lock()
        self._version: int | None = None
        db.pulse.watch(VERSION, select(settings_rows.c.version))
        self._book: tuple[UserSettings, ...] = (UserSettings(),)
        self.load_error: str | None = None

    def current(self) -> UserSettings:
        """The first pair's settings."""
        return self.watchlist()[0]

    def watchlist(self) -> tuple[UserSettings, ...]:
        """Every watched pair's settings, in the watchlist's order."""
        try:
            version = self.db.pulse.value(VERSION)
            if version is None:
                self._take_over_legacy()
            elif version != self._version:
                with self._lock:
                    self._reload(version)
        except FAILURES:  # a damaged file or a server down (shown as such): the settings in use go on
            pass
        return self._book

    def for_pair(self, pair) -> UserSettings | None:
        """The settings of a watched pair (in either order of its symbols), or None."""
        wanted = frozenset(pair)
        return next((s for s in self.watchlist() if frozenset(s.pair) == wanted), None)

    def _reload(self, seen: int) -> None:
        try:
            with self.db.connection() as conn:
                version, book = self._read(conn)
            self._book, self._version = book, version
            self.load_error = None
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            self.load_error = f"The saved settings are unreadable ({exc}); keeping the settings in use"
            self._version = seen  # not re-read each tick

    @staticmethod
    def _read(conn) -> tuple[int, tuple[UserSettings, ...]]:
        """(version, watchlist) as stored: the `settings` row alone is a watchlist of its one pair
        (a database of an earlier version, or one not seeded yet). Raises ValueError & co."""
        row = conn.execute(select(settings_rows.c.version, settings_rows.c.body)).first()
        version, first = (row[0], validate({**asdict(UserSettings()), **json.loads(row[1])})) if row else (0, None)
        first = first or UserSettings()
        pairs = conn.execute(
            select(pair_rows.c.a, pair_rows.c.b, pair_rows.c.body).order_by(pair_rows.c.position)
        ).all()
        book = tuple(
            validate({**asdict(first), **json.loads(body), "symbol_a": a, "symbol_b": b}) for a, b, body in pairs
        )
        return version, book or (first,)

    def _write(self, conn, version: int, book) -> None:
        book = tuple(replace(s, **_shared(book[0])) for s in book)
        stmt = insert(conn, settings_rows).values(id=1, body=json.dumps(asdict(book[0])), version=version + 1)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[settings_rows.c.id],
                set_={"body": stmt.excluded.body, "version": stmt.excluded.version},
            )
        )
        conn.execute(delete(pair_rows))
        conn.execute(
            pair_rows.insert(),
            [
                {
                    "position": i,
                    "a": s.symbol_a,
                    "b": s.symbol_b,
                    "body": json.dumps({k: v for k, v in asdict(s).items() if k in PAIR_FIELDS[2:]}),
                }
                for i, s in enumerate(book)
            ],
        )
        self._book, self._version = book, version + 1
        self.db.pulse.saw(VERSION, version + 1)

    def _change(self, edit) -> tuple[UserSettings, ...]:
        """Apply `edit(watchlist) -> new watchlist` in one write transaction (raising leaves
        everything as it was)."""
        try:
            with self._lock, self.db.write(lock="settings") as conn:
                version, book = self._read(conn)
                self._write(conn, version, tuple(edit(list(book))))
                return self._book
        except FAILURES:
            raise DatabaseDown() from None

    def _take_over_legacy(self) -> None:
        if self.legacy is None or not self.legacy.exists():
            self.legacy = None  # nothing to take over: not looked for again
            return
        try:
            self.save(validate({**asdict(UserSettings()), **json.loads(self.legacy.read_text(encoding="utf-8"))}))
            self.legacy.rename(self.legacy.with_suffix(".json.imported"))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self.load_error = f"{self.legacy} is unreadable ({exc}); using the defaults"
            self.legacy = None

    def save(self, settings: UserSettings, pair=None) -> UserSettings:
        """Save `settings`: its shared fields for every pair, its own for the watched `pair` (the
        first when None), which it may change to another pair of symbols (not one watched)."""

        def edit(book):
            at = 0 if pair is None else _index(book, pair)
            if any(i != at and frozenset(s.pair) == frozenset(settings.pair) for i, s in enumerate(book)):
                raise SettingsError(f"{settings.pair_label} is already in the watchlist")
            book = [replace(s, **_shared(settings)) for s in book]
            book[at] = settings
            return book

        book = self._change(edit)
        return next(s for s in book if s.pair == settings.pair)

    def add_pair(self, pair) -> UserSettings:
        """Watch `pair` (validated symbols), with the first pair's analysis and rules to start from."""

        def edit(book):
            if any(frozenset(s.pair) == frozenset(pair) for s in book):
                raise SettingsError(f"{pair_name(pair)} is already in the watchlist")
            if len(book) >= MAX_PAIRS:
                raise SettingsError(f"At most {MAX_PAIRS} pairs are watched; remove one first")
            return [*book, replace(book[0], symbol_a=pair[0], symbol_b=pair[1])]

        return self._change(edit)[-1]

    def remove_pair(self, pair) -> None:
        """Stop watching `pair` (its history stays until it ages out). KeyError if it is not
        watched; SettingsError for the last one."""

        def edit(book):
            at = _index(book, pair)
            if len(book) == 1:
                raise SettingsError("The watchlist keeps at least one pair; add another first")
            return book[:at] + book[at + 1 :]

        self._change(edit)

    def seed(self, pairs) -> None:
        """On the first start (no watchlist stored yet), watch `pairs` (--pairs), each with the
        saved (or default) analysis; without `pairs`, the saved pair. After that the watchlist is
        changed from Settings and the API only."""
        self.watchlist()  # takes over a settings.json of an older version first
        with self._lock, self.db.write(lock="settings") as conn:
            if conn.execute(select(pair_rows.c.position).limit(1)).first():
                return
            version, book = self._read(conn)
            if pairs:
                book = tuple(replace(book[0], symbol_a=a, symbol_b=b) for a, b in pairs)
            self._write(conn, version, book)


def _shared(settings: UserSettings) -> dict:
    """The fields every pair shares (poll interval, webhook, REST host)."""
    return {k: v for k, v in asdict(settings).items() if k not in PAIR_FIELDS}


def _index(book, pair) -> int:
    wanted = frozenset(pair)
    for i, s in enumerate(book):
        if frozenset(s.pair) == wanted:
            return i
    raise KeyError(f"{pair_name(pair)} is not in the watchlist")
