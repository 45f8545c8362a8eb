"""Configuration: how the process runs (`AppConfig`, from CLI flags and env vars) and what the
user chose (`UserSettings`, edited on /settings, persisted as JSON under the data dir).

Validation lives here, once, for the UI and the HTTP API alike: bad input raises
`SettingsError` with a message meant for a person, and nothing saved is touched.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from services.bars import TIMEFRAMES
from services.hedge import METHODS

WINDOW_RANGE = (2, 86_400)
POLL_RANGE = (0.5, 60.0)


class SettingsError(ValueError):
    """Invalid user input; the message is shown to the user as is."""


@dataclass(frozen=True)
class AppConfig:
    source: str = "auto"  # auto | binance | sim | replay
    binance_url: str = "https://api.binance.com"
    host: str = "127.0.0.1"
    port: int = 8050
    data_dir: str = "data"
    debug: bool = False
    history_s: int = 86_400  # bounded history span
    ffill_s: int = 3  # forward-fill at most this many empty seconds
    sim_seed: int = 7
    replay: tuple[str, ...] = ()  # recordings for --source replay
    replay_speed: str = "1"


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

    @property
    def pair(self) -> tuple[str, str]:
        return (self.symbol_a, self.symbol_b)

    @property
    def pair_label(self) -> str:
        return f"{self.symbol_a}/{self.symbol_b}"


def parse_float(value, name: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{name} is required")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    return x


def parse_threshold(value) -> float:
    x = parse_float(value, "Threshold")
    if x <= 0:
        raise SettingsError(f"Threshold must be greater than 0, got {value!r}")
    return x


def parse_window(value) -> int:
    x = parse_float(value, "Window")
    if x != int(x) or not WINDOW_RANGE[0] <= x <= WINDOW_RANGE[1]:
        raise SettingsError(f"Window must be a whole number of buckets from {WINDOW_RANGE[0]} to "
                            f"{WINDOW_RANGE[1]}, got {value!r}")
    return int(x)


def parse_poll_interval(value) -> float:
    x = parse_float(value, "Poll interval")
    if not POLL_RANGE[0] <= x <= POLL_RANGE[1]:
        raise SettingsError(f"Poll interval must be from {POLL_RANGE[0]} to {POLL_RANGE[1]} s, got {value!r}")
    return x


def parse_choice(value, choices, name: str) -> str:
    text = str(value if value is not None else "").strip().lower()
    if text not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return text


def parse_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def parse_symbol(value, known, name: str = "Symbol") -> str:
    sym = str(value or "").strip().upper()
    if not sym:
        raise SettingsError(f"{name} is required")
    if known is not None and sym not in known:
        raise SettingsError(f"{name} {sym} is not a symbol trading on this source")
    return sym


def validate(raw: dict, known_symbols=None) -> UserSettings:
    """Build UserSettings from user input (strings or numbers), or raise SettingsError."""
    a = parse_symbol(raw.get("symbol_a"), known_symbols, "Symbol A")
    b = parse_symbol(raw.get("symbol_b"), known_symbols, "Symbol B")
    if a == b:
        raise SettingsError(f"The two symbols must differ (both are {a})")
    return UserSettings(a, b, parse_threshold(raw.get("threshold")), parse_window(raw.get("window")),
                        parse_poll_interval(raw.get("poll_interval_s")),
                        parse_choice(raw.get("hedge", "none"), METHODS, "Hedge method"),
                        parse_choice(raw.get("timeframe", "1s"), tuple(TIMEFRAMES), "Timeframe"),
                        parse_bool(raw.get("log_prices", False), "Log prices"))


class SettingsStore:
    """UserSettings persisted to `<data_dir>/settings.json`.

    `current()` re-reads the file only when its mtime changes (one stat per call), so a save
    in one worker or tab reaches every other on its next tick. Writes are atomic (temp file +
    rename): a crash mid-save leaves the old settings, never half a file.
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / "settings.json"
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._settings = UserSettings()
        self.load_error: str | None = None

    def current(self) -> UserSettings:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._settings
        if mtime != self._mtime:
            with self._lock:
                self._reload(mtime)
        return self._settings

    def _reload(self, mtime) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._settings = validate({**asdict(UserSettings()), **raw})
            self.load_error = None
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self.load_error = f"{self.path} is unreadable ({exc}); keeping the settings in use"
        self._mtime = mtime

    def save(self, settings: UserSettings) -> UserSettings:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".settings-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(settings), f, indent=2)
            os.replace(tmp, self.path)
            self._settings = settings
            self._mtime = self.path.stat().st_mtime_ns
        return settings
