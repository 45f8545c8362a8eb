"""A Binance-shaped HTTP server for tests, on 127.0.0.1 (pytest-httpserver).

It serves the real response shapes of ping, time, exchangeInfo, ticker/price, ticker/24hr and
klines (see BINANCE_NOTES.md), checks parameters the way Binance does (the `symbols` array must
have no spaces; unknown symbols get -1121, unknown intervals -1120), counts requests per path,
and can be told to fail.

Prices come from the recorded BTCUSDT/ETHUSDT 1-minute closes in ../shared/data, given a small
deterministic per-second wiggle, so every UTC second has one known price: `price(symbol, s)`;
a kline's close is the price of its last second. With a trade tape attached (`tape`, the stream
tests'), the ticker answers the last trade so far and a 1 s kline closes at its second's last trade.

`add_scan_universe()` lists more symbols for the scanner, whose klines of every interval are
known series (`bar_close`): COINAUSDT and COINBUSDT are cointegrated in log price (β 1.3, an
AR(1) spread), WALKAUSDT and WALKBUSDT are independent random walks, and ETHBTC is quoted in BTC.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from werkzeug import Request, Response

SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
SYMBOLS_RE = re.compile(r'^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$')
INTERVAL_S = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400}
SCAN_SERIES_BARS = 12_000  # each scan symbol's series, centred on the bar the fake started in
SCAN_SYMBOLS = {  # symbol: (quote asset, 24 h quote volume): the four USDT ones trade most
    "COINAUSDT": ("USDT", 5e9),
    "COINBUSDT": ("USDT", 4e9),
    "WALKAUSDT": ("USDT", 3e9),
    "WALKBUSDT": ("USDT", 2.5e9),
    "ETHBTC": ("BTC", 9e9),
}
RECORDED = {
    "BTCUSDT": "binance-futures-um-BTCUSDT-1m-2025-10-22.csv",
    "ETHUSDT": "binance-futures-um-ETHUSDT-1m-2025-10-22.csv",
}


def recorded_closes(symbol: str) -> pd.Series:
    df = pd.read_csv(SHARED_DATA / RECORDED[symbol])
    return pd.Series(df["close"].to_numpy(), index=df["open_time"].to_numpy())


class FakeBinance:
    def __init__(self, httpserver):
        self.server = httpserver
        self.closes = {s: recorded_closes(s).to_numpy() for s in RECORDED}
        self.trading = {"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "SOLUSDT": "TRADING", "LUNAUSDT": "BREAK"}
        self.quotes: dict[str, str] = {}  # symbol -> quote asset, when not USDT
        self.volumes = {"BTCUSDT": 2e9, "ETHUSDT": 1e9, "SOLUSDT": 4e8, "LUNAUSDT": 0.0}  # 24 h quote volume
        self._series: dict[tuple[str, int], np.ndarray] = {}
        self._anchor_s = int(time.time())
        self.counts: Counter = Counter()
        self.kline_intervals: Counter = Counter()  # klines requests per interval
        self.times: dict[str, list[float]] = defaultdict(list)
        self.served: dict[str, dict[int, float]] = defaultdict(dict)  # ticker answers: symbol -> second -> price
        self._failures: dict[str, list] = defaultdict(list)
        self._delays: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self.tape = None  # a fake_stream.TradeTape: the ticker and 1 s klines read its trades
        for path, handler in {
            "/api/v3/ping": lambda r: self._json({}),
            "/api/v3/time": lambda r: self._json({"serverTime": int(time.time() * 1000)}),
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/ticker/price": self._ticker_price,
            "/api/v3/ticker/24hr": self._ticker_24h,
            "/api/v3/klines": self._klines,
        }.items():
            httpserver.expect_request(path).respond_with_handler(self._wrap(path, handler))

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def price(self, symbol: str, second: int) -> float:
        """The one price of `symbol` in UTC second `second`."""
        closes = self.closes.get(symbol)
        base = closes[(second // 60) % len(closes)] if closes is not None else 150.0
        wiggle = ((second * 7919 + len(symbol) * 104729) % 61 - 30) * 1e-5
        return round(base * (1 + wiggle), 2)

    def add_scan_universe(self, walkers: int = 0) -> None:
        """The scan symbols, and `walkers` more independent random walks (RW00USDT, ...) that
        trade less than they do."""
        self.volumes["LUNAUSDT"] = 1e10  # not TRADING: never in a universe, whatever its volume
        for symbol, (quote, volume) in SCAN_SYMBOLS.items():
            self.trading[symbol] = "TRADING"
            self.quotes[symbol] = quote
            self.volumes[symbol] = volume
        for i in range(walkers):
            self.trading[f"RW{i:02d}USDT"] = "TRADING"
            self.volumes[f"RW{i:02d}USDT"] = 2e9 - i * 1e7

    def _scan_series(self, symbol: str, interval_s: int) -> np.ndarray:
        """A scan symbol's closes, one per bar from the bar SCAN_SERIES_BARS/2 before the start."""
        key = (symbol, interval_s)
        if key not in self._series:
            rng = np.random.default_rng(interval_s)
            n = SCAN_SERIES_BARS
            common = np.cumsum(rng.normal(0, 0.01, n))
            spread = np.zeros(n)
            shocks = rng.normal(0, 0.003, n)
            for i in range(1, n):
                spread[i] = 0.8 * spread[i - 1] + shocks[i]
            walks = np.cumsum(rng.normal(0, 0.004, (n, 2)), axis=0)
            logs = {
                "COINBUSDT": np.log(50.0) + common,
                "COINAUSDT": np.log(2.0) + 1.3 * common + spread,
                "WALKAUSDT": np.log(30.0) + walks[:, 0],
                "WALKBUSDT": np.log(80.0) + walks[:, 1],
                "ETHBTC": np.log(0.036) + 0.5 * common + walks[:, 1],
            }
            for name, values in logs.items():
                self._series[(name, interval_s)] = np.round(np.exp(values), 6)
        return self._series[key]

    def _walker_series(self, symbol: str, interval_s: int) -> np.ndarray:
        key = (symbol, interval_s)
        if key not in self._series:
            rng = np.random.default_rng([int(symbol[2:4]), interval_s])
            self._series[key] = np.round(20.0 * np.exp(np.cumsum(rng.normal(0, 0.004, SCAN_SERIES_BARS))), 6)
        return self._series[key]

    def bar_close(self, symbol: str, interval_s: int, open_s: int) -> float:
        """The close of `symbol`'s kline of `interval_s` that opens at `open_s`."""
        first_bar = self._anchor_s // interval_s - SCAN_SERIES_BARS // 2
        at = (open_s // interval_s - first_bar) % SCAN_SERIES_BARS
        if symbol in SCAN_SYMBOLS:
            return float(self._scan_series(symbol, interval_s)[at])
        if symbol.startswith("RW"):
            return float(self._walker_series(symbol, interval_s)[at])
        return self.price(symbol, open_s + interval_s - 1)

    def fail_next(self, path: str, status: int, body, times: int = 1, headers=None) -> None:
        with self._lock:
            self._failures[path].extend([(status, body, headers or {})] * times)

    def delay_next(self, path: str, seconds: float, times: int = 1) -> None:
        """Answer the next `times` requests to `path` only after `seconds` (a hung exchange)."""
        with self._lock:
            self._delays[path].extend([seconds] * times)

    def count(self, path: str) -> int:
        return self.counts[path]

    # --- handlers ----------------------------------------------------------------------------
    def _wrap(self, path, handler):
        def respond(request: Request) -> Response:
            with self._lock:
                self.counts[path] += 1
                self.times[path].append(time.time())
                failure = self._failures[path].pop(0) if self._failures[path] else None
                delay = self._delays[path].pop(0) if self._delays[path] else 0.0
            time.sleep(delay)
            if failure:
                status, body, headers = failure
                text = body if isinstance(body, str) else json.dumps(body)
                return Response(text, status=status, headers=headers, content_type="application/json")
            return handler(request)

        return respond

    @staticmethod
    def _json(body, status=200) -> Response:
        return Response(
            json.dumps(body), status=status, content_type="application/json", headers={"X-MBX-USED-WEIGHT-1M": "7"}
        )

    def _error(self, code: int, msg: str, status: int = 400) -> Response:
        return self._json({"code": code, "msg": msg}, status)

    def _exchange_info(self, request: Request) -> Response:
        symbols = []
        for s, st in self.trading.items():
            quote = self.quotes.get(s, "USDT")
            symbols.append({"symbol": s, "status": st, "baseAsset": s[: -len(quote)], "quoteAsset": quote})
        if request.args.get("symbolStatus"):
            symbols = [s for s in symbols if s["status"] == request.args["symbolStatus"]]
        return self._json(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    def _ticker_price(self, request: Request) -> Response:
        raw = request.args.get("symbols")
        if raw is None:
            return self._error(-1102, "Mandatory parameter 'symbols' was not sent, was empty/null, or malformed.")
        if not SYMBOLS_RE.match(raw):
            return self._error(
                -1100,
                "Illegal characters found in parameter 'symbols'; legal range is "
                '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
            )
        symbols = json.loads(raw)
        if any(s not in self.trading for s in symbols):
            return self._error(-1121, "Invalid symbol.")
        now = time.time()
        if now % 1 > 0.97:  # answer inside one second, so that the Date header names the priced second
            time.sleep(1.0 - now % 1 + 0.005)
            now = time.time()
        second = int(now)
        rows = []
        for s in symbols:
            traded = self.tape.last(s, int(now * 1000)) if self.tape is not None else None
            p = self.price(s, second) if traded is None else traded
            self.served[s][second] = p
            rows.append({"symbol": s, "price": f"{p:.8f}"})
        return self._json(rows)

    def _ticker_24h(self, request: Request) -> Response:
        """Every symbol's 24 h statistics (the MINI type's fields that the app reads, and more)."""
        if request.args.get("type", "FULL") not in ("FULL", "MINI"):
            return self._error(-1100, "Illegal characters found in parameter 'type'.")
        second = int(time.time())
        rows = [
            {
                "symbol": s,
                "lastPrice": f"{self.price(s, second):.8f}",
                "volume": f"{self.volumes.get(s, 0.0) / 100:.8f}",
                "quoteVolume": f"{self.volumes.get(s, 0.0):.8f}",
                "openTime": (second - 86_400) * 1000,
                "closeTime": second * 1000,
            }
            for s in self.trading
        ]
        return self._json(rows)

    def _klines(self, request: Request) -> Response:
        symbol = request.args.get("symbol")
        if symbol not in self.trading:
            return self._error(-1121, "Invalid symbol.")
        step = INTERVAL_S.get(request.args.get("interval", ""))
        self.kline_intervals[request.args.get("interval")] += 1
        if step is None:
            return self._error(-1120, "Invalid interval.")
        limit = min(int(request.args.get("limit", 500)), 1000)
        now_ms = int(time.time() * 1000)
        end_ms = min(int(request.args.get("endTime", now_ms)), now_ms)
        if "startTime" in request.args:
            first = -(-int(request.args["startTime"]) // (step * 1000)) * step
        else:  # the most recent `limit` klines, the open one included
            first = (end_ms // (step * 1000) - limit + 1) * step
        last = end_ms // (step * 1000) * step
        if step == 1:
            last = min(last, int(time.time()) - 1)  # a 1 s kline is served once its second is over
        rows = []
        for s in range(first, min(last, first + (limit - 1) * step) + 1, step):
            traded = self.tape.last_of_second(symbol, s) if self.tape is not None and step == 1 else None
            p = f"{self.bar_close(symbol, step, s) if traded is None else traded:.8f}"
            rows.append([s * 1000, p, p, p, p, "1.00000000", (s + step) * 1000 - 1, p, 3, "0.5", "0.5", "0"])
        return self._json(rows)
