"""A Binance-shaped HTTP server for tests, on 127.0.0.1 (pytest-httpserver).

It serves the real response shapes of ping, time, exchangeInfo, ticker/price and klines (see
BINANCE_NOTES.md), checks parameters the way Binance does (the `symbols` array must have no
spaces; unknown symbols get -1121), counts requests per path, and can be told to fail.

Prices come from the recorded BTCUSDT/ETHUSDT 1-minute closes in ../shared/data, given a small
deterministic per-second wiggle, so every UTC second has one known price: `price(symbol, s)`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from werkzeug import Request, Response

SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
SYMBOLS_RE = re.compile(r'^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$')
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
        self.counts: Counter = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.served: dict[str, dict[int, float]] = defaultdict(dict)  # ticker answers: symbol -> second -> price
        self._failures: dict[str, list] = defaultdict(list)
        self._delays: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        for path, handler in {
            "/api/v3/ping": lambda r: self._json({}),
            "/api/v3/time": lambda r: self._json({"serverTime": int(time.time() * 1000)}),
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/ticker/price": self._ticker_price,
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
        symbols = [
            {"symbol": s, "status": st, "baseAsset": s[:-4], "quoteAsset": "USDT"} for s, st in self.trading.items()
        ]
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
            p = self.price(s, second)
            self.served[s][second] = p
            rows.append({"symbol": s, "price": f"{p:.8f}"})
        return self._json(rows)

    def _klines(self, request: Request) -> Response:
        symbol = request.args.get("symbol")
        if symbol not in self.trading:
            return self._error(-1121, "Invalid symbol.")
        if request.args.get("interval") != "1s":
            return self._error(-1120, "Invalid interval.")
        limit = int(request.args.get("limit", 500))
        end_ms = int(request.args.get("endTime", time.time() * 1000))
        start_ms = int(request.args.get("startTime", end_ms - limit * 1000))
        first, last = -(-start_ms // 1000), min(end_ms // 1000, int(time.time()) - 1)
        rows = []
        for s in range(first, min(last, first + limit - 1) + 1):
            p = f"{self.price(symbol, s):.8f}"
            rows.append([s * 1000, p, p, p, p, "1.00000000", s * 1000 + 999, p, 3, "0.5", "0.5", "0"])
        return self._json(rows)
