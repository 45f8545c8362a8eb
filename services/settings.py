"""Configuration: how the process runs (`AppConfig`, from CLI flags and env vars) and what the
user chose (`UserSettings`, edited on /settings, persisted in the embedded database).

Validation lives here, once, for the UI and the HTTP API alike: bad input raises
`SettingsError` with a message meant for a person, and nothing saved is touched.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.alerts import DEFAULT_RULES, LEGS, RULE_KINDS, Rule
from services.bars import TIMEFRAMES
from services.binance import DEFAULT_BASE_URL, KNOWN_HOSTS, MARKET_DATA_URL
from services.db import Database
from services.hedge import METHODS

WINDOW_RANGE = (2, 86_400)
POLL_RANGE = (0.5, 60.0)
COOLDOWN_MAX_S = 86_400
MAX_RULES = 20
THRESHOLD_RANGE = (0.01, 100.0)  # |z| below 0.01 is every bar, beyond 100 never: both are typos
SHOWN_MAX = 80  # an echoed input is cut to this many characters
CHECK_EVERY_S = 1.0  # a save in another process shows here within this long


class SettingsError(ValueError):
    """Invalid user input; the message is shown to the user as is."""


@dataclass(frozen=True)
class AppConfig:
    source: str = "auto"  # auto | binance | sim | replay
    binance_url: str = DEFAULT_BASE_URL
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


class SettingsStore:
    """UserSettings persisted in the embedded database (one row, with a version number).

    `current()` looks at the row's version at most once a second (one indexed read, not one per
    tab's tick) and re-reads the row only when it changed: a save shows at once in the process
    that made it, and within a second in every other. A save is one transaction:
    a crash mid-save leaves the old settings. A `settings.json` from an older version is taken
    over once.
    """

    def __init__(self, db: Database, legacy_dir=None):
        self.db = db
        self.legacy = Path(legacy_dir) / "settings.json" if legacy_dir is not None else None
        self._lock = threading.Lock()
        self._version: int | None = None
        self._checked = -CHECK_EVERY_S  # time.monotonic() of the last look at the version
        self._settings = UserSettings()
        self.load_error: str | None = None

    def current(self) -> UserSettings:
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return self._settings
        self._checked = now
        try:
            rows = self.db.query("SELECT version FROM settings WHERE id = 1")
        except sqlite3.DatabaseError:  # a damaged file (shown as such): the settings in use go on
            return self._settings
        if not rows:
            self._take_over_legacy()
        elif rows[0][0] != self._version:
            with self._lock:
                self._reload()
        return self._settings

    def _reload(self) -> None:
        version, body = self.db.query("SELECT version, body FROM settings WHERE id = 1")[0]
        try:
            self._settings = validate({**asdict(UserSettings()), **json.loads(body)})
            self.load_error = None
        except (ValueError, AttributeError, TypeError) as exc:
            self.load_error = f"The saved settings are unreadable ({exc}); keeping the settings in use"
        self._version = version

    def _take_over_legacy(self) -> None:
        if self.legacy is None or not self.legacy.exists():
            return
        try:
            self.save(validate({**asdict(UserSettings()), **json.loads(self.legacy.read_text(encoding="utf-8"))}))
            self.legacy.rename(self.legacy.with_suffix(".json.imported"))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self.load_error = f"{self.legacy} is unreadable ({exc}); using the defaults"
            self.legacy = None

    def save(self, settings: UserSettings) -> UserSettings:
        body = json.dumps(asdict(settings))
        with self._lock, self.db.write() as conn:
            row = conn.execute("SELECT version FROM settings WHERE id = 1").fetchone()
            version = (row[0] if row else 0) + 1
            conn.execute(
                "INSERT INTO settings (id, body, version) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET body = excluded.body, version = excluded.version",
                (body, version),
            )
            self._settings, self._version = settings, version
        return settings
