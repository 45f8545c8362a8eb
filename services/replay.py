"""Replay of recorded klines as if live: `--source replay --replay PATH... --replay-speed N|max`.

Reads Binance's bulk kline CSV files (data.binance.vision layout: 12 columns, with or without a
header line, open times in milliseconds or, in spot files from 2025 on, microseconds) and JSON
arrays as the klines endpoint returns them. The symbol comes from the file name
(`BTCUSDT-1m-2025-10-22.csv`, `binance-futures-um-BTCUSDT-1m-...`) or from `SYMBOL=PATH`.

Each kline's close is the last price of its bar; it is replayed as a tick at the bar's last second
(so resampling to the recording's timeframe labels it by its open time, as Binance does). The
replay clock starts a little into the recording (so that rolling statistics are defined on first
paint) and runs `speed` times faster than the wall clock; `max` jumps to the end.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from services.binance import BinanceError
from services.sources import Tick, iso_utc, last_of_each_bar, utc_from_epoch

SYMBOL_IN_NAME = re.compile(r"(?:^|[-_])([A-Z0-9]{5,20})-(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d)-")
WARM_START_S = 3 * 3_600


class ReplayError(ValueError):
    """A recording that cannot be replayed; the message says which file and why."""


@dataclass(frozen=True)
class Recording:
    symbol: str
    path: str
    times: np.ndarray  # epoch second of each bar's last second (the close)
    closes: np.ndarray
    interval_s: int


def _symbol(spec: str) -> tuple[str, Path]:
    if "=" in spec and not Path(spec).exists():
        sym, path = spec.split("=", 1)
        return sym.strip().upper(), Path(path)
    path = Path(spec)
    m = SYMBOL_IN_NAME.search(path.name)
    if not m:
        raise ReplayError(
            f"{spec}: cannot tell the symbol from the file name; name it like "
            f"BTCUSDT-1m-2025-10-22.csv or pass SYMBOL=PATH"
        )
    return m.group(1), path


def _rows(path: Path) -> np.ndarray:
    """open_time and close columns as floats, from CSV (header or not) or klines JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
            return np.array([[float(r[0]), float(r[4])] for r in rows])
        except (ValueError, TypeError, IndexError) as exc:
            raise ReplayError(f"{path}: not a JSON array of 12-field kline rows ({exc})") from None
    first = text.split("\n", 1)[0].split(",")[0].strip()
    header = 0 if first and not first.replace(".", "").isdigit() else None
    try:
        df = pd.read_csv(path, header=header)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ReplayError(f"{path}: not a kline CSV ({exc})") from None
    if df.shape[1] < 6:
        raise ReplayError(f"{path}: expected Binance's 12 kline columns, found {df.shape[1]}")
    try:
        return df.iloc[:, [0, 4]].to_numpy(dtype=float)
    except ValueError as exc:
        raise ReplayError(f"{path}: open_time and close must be numbers ({exc})") from None


def parse_speed(value) -> float | str:
    """`max`, or a positive number of recorded seconds per wall-clock second."""
    text = str(value).strip().lower()
    if text == "max":
        return "max"
    try:
        speed = float(text)
    except ValueError:
        speed = -1.0
    if not (speed > 0 and np.isfinite(speed)):
        raise ReplayError(f"--replay-speed must be a positive number or max, got {value!r}")
    return speed


def load_recording(spec: str) -> Recording:
    symbol, path = _symbol(spec)
    data = _rows(path)
    if len(data) < 2:
        raise ReplayError(f"{path}: needs at least two klines, found {len(data)}")
    opens = data[:, 0]
    opens = opens / (1e6 if opens[0] > 1e14 else 1e3)  # µs (spot files from 2025) or ms
    step = np.diff(opens)
    if (step <= 0).any():
        raise ReplayError(f"{path}: open times must increase")
    interval = round(float(np.median(step)))
    if interval < 1 or not np.isfinite(data[:, 1]).all():
        raise ReplayError(f"{path}: bad open times or close prices")
    return Recording(symbol, str(path), (opens + interval - 1).astype(np.int64), data[:, 1], interval)


class ReplaySource:
    simulated = False
    kind = "replay"
    backfill_all = True  # history is a local file: load all of it up to the replay time
    store_key = None  # replay time restarts with the process: its buckets are not persisted
    request_weight = None

    def __init__(self, specs, speed: float | str = 1.0, wall=time.time):
        self.recordings = {r.symbol: r for r in (load_recording(s) for s in specs)}
        if len(self.recordings) < 2:
            raise ReplayError("a replay needs recordings of at least two different symbols")
        self.speed = speed
        self.start_s = min(int(r.times[0]) - r.interval_s + 1 for r in self.recordings.values())  # first open
        self.end_s = max(int(r.times[-1]) for r in self.recordings.values())
        self.interval_s = max(r.interval_s for r in self.recordings.values())
        self.first_s = min(self.start_s + WARM_START_S, self.start_s + (self.end_s - self.start_s) // 4)
        self._wall = wall
        self._wall0 = wall()

    @property
    def label(self) -> str:
        pace = "max speed" if self.speed == "max" else f"×{self.speed:g}"
        return f"Replay {iso_utc(self.start_s)[:16]}Z → {iso_utc(self.end_s)[:16]}Z · {pace}"

    def now(self) -> float:
        """Replay time: UTC seconds in the recording, clamped to its end."""
        if self.speed == "max":
            return float(self.end_s)
        return min(self.first_s + (self._wall() - self._wall0) * float(self.speed), float(self.end_s))

    def symbols(self) -> list[str]:
        return sorted(self.recordings)

    def _recording(self, symbol: str) -> Recording:
        rec = self.recordings.get(symbol)
        if rec is None:
            raise BinanceError(
                f"No recording of {symbol} in this replay ({', '.join(self.symbols())})", status=400, code=-1121
            )
        return rec

    def poll(self, symbols) -> list[Tick]:
        now = self.now()
        out = []
        for s in symbols:
            rec = self._recording(s)
            k = int(np.searchsorted(rec.times, now, side="right")) - 1
            if k >= 0:
                out.append(Tick(s, float(rec.closes[k]), utc_from_epoch(int(rec.times[k]))))
        return out

    def history(self, symbol: str, start_s: int, end_s: int) -> list[Tick]:
        rec = self._recording(symbol)
        end_s = min(int(end_s), int(self.now()))
        lo, hi = np.searchsorted(rec.times, [start_s, end_s + 1])
        return [Tick(symbol, float(p), utc_from_epoch(int(t))) for t, p in zip(rec.times[lo:hi], rec.closes[lo:hi])]

    def markets(self, quote: str) -> dict[str, float]:
        """The recorded symbols quoted in `quote` (a recording has no 24 h volume: all 0)."""
        return {s: 0.0 for s in self.symbols() if s.endswith(quote)}

    def bar_closes(self, symbol: str, interval_s: int, bars: int) -> tuple[np.ndarray, np.ndarray]:
        """The recording's closes up to the replay time, as bars of `interval_s` (at least its own)."""
        rec = self._recording(symbol)
        if interval_s < rec.interval_s or interval_s % rec.interval_s:
            raise BinanceError(f"{symbol} is recorded in {rec.interval_s} s bars; {interval_s} s bars cannot be made")
        return last_of_each_bar(rec.times, rec.closes, interval_s, int(self.now()) + 1, bars)
