"""Where prices come from: the Binance REST API or a built-in simulation.

Every source answers the same three questions, so the service layer above never cares which
one it has:

- `symbols()`: the tradable symbols (for the pair dropdowns);
- `poll(symbols)`: the latest price of each symbol, ONE upstream call;
- `history(symbol, start_s, end_s)`: last price of each UTC second in [start_s, end_s], to
  backfill the store at start, on a pair change and after a hole.

and two more for the scanner (services/scanner.py):

- `markets(quote)`: every TRADING symbol quoted in `quote`, with its 24 h quote volume;
- `bar_closes(symbol, interval_s, bars)`: the closes of the last `bars` closed bars.

`request_weight` says what each call costs on the exchange (None: nothing, a local source).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.signal import lfilter

from services.binance import (
    DEFAULT_STREAM_URL,
    KLINES_MAX_LIMIT,
    WEIGHT,
    BinanceClient,
    BinanceError,
    stream_for,
)

log = logging.getLogger(__name__)

LAST_OF_SECOND = timedelta(microseconds=999_999)


@dataclass(frozen=True)
class Tick:
    symbol: str
    price: float
    time: datetime  # tz-aware UTC

    @property
    def epoch(self) -> float:
        return self.time.timestamp()


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def iso_utc(when: float | datetime) -> str:
    """ISO 8601 in UTC with a `Z`, to the millisecond: how every time is shown."""
    dt = utc_from_epoch(when) if isinstance(when, (int, float)) else when.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def last_of_each_bar(times, closes, interval_s: int, now_s: int, bars: int) -> tuple[np.ndarray, np.ndarray]:
    """From prices stamped with their second (ascending), each closed bar's last price: the
    open times and closes of the last `bars` bars of `interval_s` that ended by `now_s`."""
    times = np.asarray(times, np.int64)
    bar = times // interval_s
    done = bar < int(now_s) // interval_s
    bar, prices = bar[done], np.asarray(closes, float)[done]
    last = np.flatnonzero(np.append(np.diff(bar) != 0, True))[-bars:] if len(bar) else np.array([], int)
    return bar[last] * interval_s, prices[last]


class BinanceSource:
    simulated = False
    kind = "binance"
    interval_s = 1  # how far apart its prices are, at the finest
    request_weight = WEIGHT

    def __init__(self, client: BinanceClient, clock=None):
        self.client = client
        if clock is not None:
            client.clock = clock

    def now(self) -> float:
        """The local clock corrected by the exchange's, so a local clock jump (suspend, NTP
        step) cannot make live data look stale or mislabel a poll."""
        return self.client.clock() + self.client.clock_offset_s

    @property
    def label(self) -> str:
        return f"Binance · {self.client.base_url}"

    def set_base_url(self, url: str) -> None:
        """Talk to another REST host from the next request on (a 451, or the Settings page)."""
        self.client.set_base_url(url)

    @property
    def store_key(self) -> str:
        """Binance.US is its own market; the other hosts serve the same prices."""
        return "binance.us" if "binance.us" in self.client.base_url else "binance"

    def symbols(self) -> list[str]:
        return self.client.trading_symbols()

    def poll(self, symbols) -> list[Tick]:
        return [Tick(q.symbol, q.price, q.time) for q in self.client.ticker_prices(symbols)]

    def history(self, symbol: str, start_s: int, end_s: int) -> list[Tick]:
        """1 s klines, paginated by 1000; each kline's close is the last price of its second, so
        it is stamped with the second's last microsecond: it replaces whatever earlier price of
        that second is held (a REST poll's, stamped when it was answered)."""
        ticks: list[Tick] = []
        cursor = int(start_s)
        while cursor <= end_s:
            rows = self.client.klines(
                symbol, "1s", start_ms=cursor * 1000, end_ms=int(end_s) * 1000 + 999, limit=KLINES_MAX_LIMIT
            )
            if not rows:
                break
            ticks.extend(Tick(symbol, k.close, k.open_time + LAST_OF_SECOND) for k in rows)
            cursor = int(rows[-1].open_time.timestamp()) + 1
            if len(rows) < KLINES_MAX_LIMIT:
                break
        return ticks

    def markets(self, quote: str) -> dict[str, float]:
        """TRADING symbols quoted in `quote` and their 24 h quote volume: exchangeInfo (20) and
        every symbol's 24 h ticker (80)."""
        quoted = {s for s, q in self.client.trading_quotes().items() if q == quote}
        return {s: v for s, v in self.client.ticker_24h_quote_volumes().items() if s in quoted}

    def kline_pages(self, bars: int) -> int:
        return -(-int(bars) // KLINES_MAX_LIMIT)

    def bar_closes(self, symbol: str, interval_s: int, bars: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `bars` closed klines of `interval_s`, in kline_pages(bars) requests."""
        interval = INTERVALS[interval_s]
        end_open = (int(self.now()) // interval_s - 1) * interval_s  # the last closed bar
        cursor = end_open - (int(bars) - 1) * interval_s
        opens, closes = [], []
        while cursor <= end_open:
            rows = self.client.klines(
                symbol, interval, start_ms=cursor * 1000, end_ms=end_open * 1000, limit=KLINES_MAX_LIMIT
            )
            opens.extend(int(k.open_time.timestamp()) for k in rows)
            closes.extend(k.close for k in rows)
            if len(rows) < KLINES_MAX_LIMIT:
                break
            cursor = opens[-1] + interval_s
        return np.array(opens, np.int64), np.array(closes, float)


INTERVALS = {60: "1m", 300: "5m", 900: "15m", 3_600: "1h"}  # the scanner's timeframes, as Binance names them


@dataclass(frozen=True)
class SimSymbol:
    level: float
    tick: float
    beta: float  # loading on the common market factor
    quote_volume_24h: float  # what its 24 h ticker says (the scanner ranks by it)


SIM_UNIVERSE: dict[str, SimSymbol] = {
    "BTCUSDT": SimSymbol(108_000.0, 0.01, 1.0, 2.1e9),
    "ETHUSDT": SimSymbol(3_870.0, 0.01, 1.25, 1.3e9),
    "BNBUSDT": SimSymbol(1_080.0, 0.01, 1.1, 2.2e8),
    "SOLUSDT": SimSymbol(185.0, 0.01, 1.4, 6.1e8),
    "XRPUSDT": SimSymbol(2.41, 0.0001, 1.3, 3.4e8),
    "ADAUSDT": SimSymbol(0.64, 0.0001, 1.35, 9.0e7),
    "DOGEUSDT": SimSymbol(0.195, 0.00001, 1.5, 2.6e8),
}
SIM_WALKERS: dict[str, SimSymbol] = {  # random walks of their own: cointegrated with nothing
    "LTCUSDT": SimSymbol(88.0, 0.01, 0.0, 1.5e8),
    "LINKUSDT": SimSymbol(14.2, 0.001, 0.0, 1.2e8),
}


class SimSource:
    """A seeded, deterministic market: one common random-walk factor plus, per symbol, a
    mean-reverting (Ornstein-Uhlenbeck) idiosyncratic part, so any two of those symbols are
    cointegrated in log price. Occasional idiosyncratic shocks blow the spread out, then it
    reverts (half-life ~2 min): a demo shows z-score alerts within minutes. Two more symbols
    (SIM_WALKERS) are random walks of their own, drawn from their own generator, so that the
    scanner has pairs that are not cointegrated to rank below the others.

    Prices are generated one UTC second at a time from `origin_s`, in blocks; the same seed
    and origin give the same path however the blocks fall. The default origin is `span_s` before
    the start of the current UTC day, so that every worker process started that day simulates
    the same market. Only the last `span_s` seconds (up to twice that, between trims) are kept.
    """

    simulated = True
    kind = "sim"
    label = "Simulated data"
    interval_s = 1
    request_weight = None

    FACTOR_VOL = 8e-5  # per second, ~45 % a year: BTC-like
    IDIO_VOL = 3e-5
    HALF_LIFE_S = 120.0
    SHOCK_PROB = 1 / 450  # per second per symbol
    SHOCK_SIZE = (3.0, 6.0)  # in stationary standard deviations of the OU part

    def __init__(self, seed: int = 7, origin_s: int | None = None, span_s: int = 86_400, clock=time.time):
        self.clock = clock
        self.span_s = int(span_s)
        if origin_s is None:
            origin_s = int(clock()) // 86_400 * 86_400 - self.span_s
        self.origin_s = int(origin_s)
        self.store_key = f"sim-{seed}-{self.origin_s}"  # the same seed and origin give the same market
        self._symbols = {**SIM_UNIVERSE, **SIM_WALKERS}
        self.names = list(self._symbols)
        params = list(self._symbols.values())
        self._level = np.array([p.level for p in params])
        self._tick = np.array([p.tick for p in params])
        self._beta = np.array([p.beta for p in params])
        self._decimals = max(round(-math.log10(min(p.tick for p in params))), 0)
        self._theta = math.log(2) / self.HALF_LIFE_S
        self._ou_sd = self.IDIO_VOL / math.sqrt(2 * self._theta - self._theta**2)
        self._normals = np.random.default_rng([seed, 1])
        self._uniforms = np.random.default_rng([seed, 2])
        self._walk_normals = np.random.default_rng([seed, 3])
        self._factor = 0.0
        self._idio = np.zeros(len(SIM_UNIVERSE))
        self._walks = np.zeros(len(SIM_WALKERS))
        self._first_s = self.origin_s  # first second held in _prices
        self._prices = np.empty((0, len(self.names)))

    def symbols(self) -> list[str]:
        return sorted(self.names)

    def now(self) -> float:
        return self.clock()

    @property
    def _next_s(self) -> int:
        return self._first_s + len(self._prices)

    def _advance_to(self, second: int) -> None:
        n = second - self._next_s + 1
        if n <= 0:
            return
        k = len(SIM_UNIVERSE)
        eps = self._normals.standard_normal((n, k + 1))
        u = self._uniforms.random((n, k, 2))
        shocks = np.where(
            u[..., 0] < self.SHOCK_PROB,
            np.sign(u[..., 1] - 0.5)
            * (self.SHOCK_SIZE[0] + abs(u[..., 1] - 0.5) * 2 * (self.SHOCK_SIZE[1] - self.SHOCK_SIZE[0]))
            * self._ou_sd,
            0.0,
        )
        factor = self._factor + np.cumsum(self.FACTOR_VOL * eps[:, 0])
        keep = 1.0 - self._theta  # OU recursion x_t = keep * x_(t-1) + input_t, as a linear filter
        idio, _ = lfilter(
            [1.0], [1.0, -keep], self.IDIO_VOL * eps[:, 1:] + shocks, axis=0, zi=(keep * self._idio)[None, :]
        )
        self._factor, self._idio = float(factor[-1]), idio[-1]
        walks = self._walks + np.cumsum(self.FACTOR_VOL * self._walk_normals.standard_normal((n, len(SIM_WALKERS))), 0)
        self._walks = walks[-1]
        out = np.column_stack([factor[:, None] * self._beta[:k] + idio, walks])
        prices = np.round(np.round(self._level * np.exp(out) / self._tick) * self._tick, self._decimals)
        self._prices = np.concatenate([self._prices, prices])
        excess = len(self._prices) - self.span_s
        if excess > self.span_s:  # trim in large steps: amortised O(1) per second
            self._prices = self._prices[excess:]
            self._first_s += excess

    def _column(self, symbol: str) -> int:
        try:
            return self.names.index(symbol)
        except ValueError:
            raise BinanceError(f"Unknown symbol {symbol} (simulation)", status=400, code=-1121) from None

    def poll(self, symbols) -> list[Tick]:
        now = self.clock()
        second = int(now)
        self._advance_to(second)
        row = self._prices[second - self._first_s]
        return [Tick(s, float(row[self._column(s)]), utc_from_epoch(now)) for s in symbols]

    def history(self, symbol: str, start_s: int, end_s: int) -> list[Tick]:
        col = self._column(symbol)
        end_s = min(int(end_s), int(self.clock()))
        self._advance_to(end_s)
        start_s = max(int(start_s), self._first_s)
        rows = self._prices[start_s - self._first_s : end_s - self._first_s + 1, col]
        return [Tick(symbol, float(p), utc_from_epoch(start_s + i)) for i, p in enumerate(rows)]

    def markets(self, quote: str) -> dict[str, float]:
        return {s: p.quote_volume_24h for s, p in self._symbols.items() if s.endswith(quote)}

    def bar_closes(self, symbol: str, interval_s: int, bars: int) -> tuple[np.ndarray, np.ndarray]:
        """From the simulated seconds it holds (about a day: fewer bars for a longer span)."""
        col = self._column(symbol)
        now_s = int(self.clock())
        self._advance_to(now_s)
        times = np.arange(self._first_s, self._next_s)
        return last_of_each_bar(times, self._prices[:, col], interval_s, now_s, bars)


def open_source(
    kind: str,
    binance_url: str,
    clock=time.time,
    seed: int = 7,
    span_s: int = 86_400,
    probe_timeout: float = 3.0,
    replay=(),
    replay_speed="1",
    fallback_urls=(),
    stream_url: str = DEFAULT_STREAM_URL,
):
    """The source named by `--source`, and why it was chosen.

    `auto` pings Binance (at most `probe_timeout` seconds) and reads its market stream, with REST
    while the stream is down (a host whose stream is not known: REST only), or falls back to the
    simulation, saying why, when it cannot be reached; a host that answers 451 (restricted
    location) is followed by the next of `fallback_urls`. `replay` raises ReplayError for unusable files.
    """
    if kind == "replay":
        from services.replay import ReplaySource, parse_speed

        source = ReplaySource(replay, parse_speed(replay_speed), wall=clock)
        return source, f"replaying {', '.join(r.path for r in source.recordings.values())}"
    if kind == "sim":
        return SimSource(seed=seed, span_s=span_s, clock=clock), "simulation chosen with --source sim"
    client = BinanceClient(binance_url, clock=clock)
    if kind == "stream":
        from services.stream import StreamSource

        source = StreamSource(client, stream_url)
        return source, f"Binance stream at {source.stream.url} (REST at {client.base_url} meanwhile)"
    if kind == "binance":
        return BinanceSource(client), f"Binance at {client.base_url}"
    notes = []
    for url in (binance_url, *fallback_urls):
        client.set_base_url(url)
        try:
            client.ping(timeout=probe_timeout)
        except BinanceError as exc:
            notes.append(f"{client.base_url}: {exc.message}")
            if exc.status == 451:
                continue
            break
        reachable = "; ".join([*notes, f"Binance reachable at {client.base_url}"])
        stream = stream_for(client.base_url, stream_url)
        if stream is None:
            return BinanceSource(client), f"{reachable}; polling REST (no market stream known for it)"
        from services.stream import StreamSource

        note = f"{reachable}; trades from its stream at {stream}, REST while it is down"
        return StreamSource(client, stream_url), note
    reason = f"Binance not reachable ({'; '.join(notes)}); using the simulation"
    log.warning(reason)
    return SimSource(seed=seed, span_s=span_s, clock=clock), reason
