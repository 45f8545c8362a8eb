"""Binance spot REST client for public market data (no API key).

One `requests.Session`, explicit connect/read timeouts, and Binance's error bodies
(`{"code": -1121, "msg": "Invalid symbol."}`) and HTTP statuses turned into typed errors, so
that callers can tell "the exchange said no" from "the exchange could not be reached".
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from services import metrics

DEFAULT_BASE_URL = "https://api.binance.com"
# Market-data hosts for when api.binance.com answers 451 (restricted location). Binance.US is a
# separate exchange with its own symbols, so it is offered but never switched to on its own.
MARKET_DATA_URL = "https://data-api.binance.vision"
BINANCE_US_URL = "https://api.binance.us"
DEFAULT_STREAM_URL = "wss://stream.binance.com:9443"  # the market streams (--source stream)
STREAM_URLS = {  # each known REST host's market streams (the same market)
    DEFAULT_BASE_URL: DEFAULT_STREAM_URL,
    MARKET_DATA_URL: "wss://data-stream.binance.vision",
    BINANCE_US_URL: "wss://stream.binance.us:9443",
}
KNOWN_HOSTS = {  # the REST hosts the Settings page offers (with --binance-url and --fallback-urls)
    DEFAULT_BASE_URL: "api.binance.com",
    MARKET_DATA_URL: "data-api.binance.vision (market data)",
    BINANCE_US_URL: "api.binance.us (Binance.US: its own symbols)",
}
KLINES_MAX_LIMIT = 1000


def stream_for(rest_url: str, configured: str) -> str | None:
    """The market streams of the market `rest_url` serves: --stream-url when it was given, else a
    known host's own; None for any other host (its market's streams are not known)."""
    if configured != DEFAULT_STREAM_URL:
        return configured
    return STREAM_URLS.get(rest_url.rstrip("/"))


WEIGHT = {  # request weight of each call the app makes (Binance's published numbers)
    "exchangeInfo": 20,
    "ticker/24hr": 80,  # every symbol, no `symbols` parameter
    "klines": 2,
}
INVALID_SYMBOL = -1121  # Binance error code: the symbol does not exist (or no longer does)
MAX_CLOCK_SKEW_S = 1.5  # beyond this the local clock is corrected by the exchange's Date header


class JitteredRetry(Retry):
    """urllib3's Retry with "equal jitter" on its exponential backoff: half of each wait is fixed,
    half random, so that clients that failed together do not retry in lockstep."""

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        return backoff / 2 + random.uniform(0.0, backoff / 2)


# Connection failures and 5xx (outcome unknown, GET is safe to repeat) are retried twice with
# exponential backoff (0 s, then 0.1–0.2 s) so that one poll stays within its second. Read
# timeouts are not retried (that would overrun the poll interval); 429/418 never are: their
# Retry-After window is honoured by the service, with no request at all.
RETRY = JitteredRetry(
    total=2,
    connect=2,
    read=0,
    status=2,
    status_forcelist=(500, 502, 503, 504),
    allowed_methods=frozenset({"GET"}),
    backoff_factor=0.1,
    raise_on_status=False,
    respect_retry_after_header=False,
)


class BinanceError(Exception):
    """Anything that kept a Binance call from giving a usable answer."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def as_dict(self) -> dict:
        return {"message": self.message, "status": self.status, "code": self.code}


class BinanceUnreachable(BinanceError):
    """No HTTP answer at all: DNS, refused connection, timeout."""


class BinanceAPIError(BinanceError):
    """An HTTP answer that is an error (4xx/5xx), with Binance's code and msg when given."""


class BinanceRateLimited(BinanceAPIError):
    """429 (too many requests) or 418 (IP banned); `retry_after` in seconds when given."""

    def __init__(self, message, status, code=None, retry_after: float | None = None):
        super().__init__(message, status, code)
        self.retry_after = retry_after


class BinanceBadResponse(BinanceError):
    """A 2xx answer whose body is not the JSON shape Binance documents."""


@dataclass(frozen=True)
class PriceQuote:
    symbol: str
    price: float
    time: datetime  # tz-aware UTC


@dataclass(frozen=True)
class Kline:
    open_time: datetime  # tz-aware UTC; klines are identified by open time
    open: float
    high: float
    low: float
    close: float
    volume: float


def symbols_param(symbols) -> str:
    """`["BTCUSDT","ETHUSDT"]` with no spaces, as Binance's pattern demands."""
    return json.dumps(list(symbols), separators=(",", ":"))


def ms_to_utc(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def _header_seconds(date_header: str | None) -> float | None:
    try:
        return parsedate_to_datetime(date_header).timestamp() if date_header else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def clock_offset(date_header: str | None, sent: float, received: float) -> float | None:
    """Seconds to add to the local clock to read the exchange's: 0 while the two agree to within
    the Date header's one-second resolution, else their difference; None without a header."""
    whole = _header_seconds(date_header)
    if whole is None:
        return None
    skew = whole + 0.5 - (sent + received) / 2.0
    return skew if abs(skew) > MAX_CLOCK_SKEW_S else 0.0


def exchange_time(date_header: str | None, sent: float, received: float) -> datetime:
    """When the exchange produced an answer that carries no timestamp of its own.

    The `Date` header is the exchange's clock but only to the second; the local clock has
    sub-second resolution but may be skewed. We take the exchange's second and, when the local
    midpoint of the request falls in that same second, its fraction too (so that two answers in
    one second keep their order). Without a usable header the local midpoint is used.
    """
    mid = (sent + received) / 2.0
    whole = _header_seconds(date_header)
    if whole is not None:
        frac = mid - whole if 0.0 <= mid - whole < 1.0 else 0.0
        return datetime.fromtimestamp(whole + frac, tz=UTC)
    return datetime.fromtimestamp(mid, tz=UTC)


def _unreachable(exc: requests.RequestException, url: str) -> BinanceUnreachable:
    """No HTTP answer: what to tell the user."""
    if isinstance(exc, requests.Timeout):
        return BinanceUnreachable(f"Binance timed out ({url})")
    if isinstance(exc, requests.ConnectionError):
        cause = getattr(exc.args[0], "reason", None) if exc.args else None
        what = "timed out" if isinstance(cause, (ReadTimeoutError, ConnectTimeoutError)) else "unreachable"
        return BinanceUnreachable(f"Binance {what} ({url})")
    return BinanceUnreachable(f"Binance unreachable ({url}): {exc.__class__.__name__}")


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


class BinanceClient:
    """Blocking client for the handful of public endpoints the dashboard needs."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        session: requests.Session | None = None,
        clock=time.time,
    ):
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "quant-dashboard/1.0")
        self.clock = clock
        self.clock_offset_s = 0.0  # exchange clock minus local clock, from the Date headers
        self.used_weight: int | None = None
        self.set_base_url(base_url)

    def set_base_url(self, base_url: str) -> None:
        """Talk to another host from the next request on (e.g. after a 451). The environment's
        proxy (HTTPS_PROXY, NO_PROXY) and CA bundle (REQUESTS_CA_BUNDLE) for the host are read
        here once, not on every request as requests does by default: a poll a second spent
        about a fifth of its CPU re-reading them."""
        self.base_url = base_url.rstrip("/")
        self.session.mount(self.base_url, HTTPAdapter(max_retries=RETRY))
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True

    def _get(self, path: str, params: dict | None = None, timeout=None):
        url = f"{self.base_url}{path}"
        sent = self.clock()
        try:
            resp = self.session.get(url, params=params, timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            metrics.UPSTREAM_REQUESTS.labels(endpoint=path, status="no answer").inc()
            raise _unreachable(exc, url) from exc
        metrics.UPSTREAM_REQUESTS.labels(endpoint=path, status=str(resp.status_code)).inc()
        received = self.clock()
        date = resp.headers.get("Date")
        offset = clock_offset(date, sent, received)
        if offset is not None:
            self.clock_offset_s = offset
        weight = resp.headers.get("X-MBX-USED-WEIGHT-1M")
        if weight and weight.isdigit():
            self.used_weight = int(weight)
        if resp.status_code >= 400:
            raise self._error(resp)
        try:
            body = resp.json()
        except ValueError as exc:
            raise BinanceBadResponse(f"Binance sent a body that is not JSON ({path})", resp.status_code) from exc
        return body, exchange_time(date, sent + self.clock_offset_s, received + self.clock_offset_s)

    @staticmethod
    def _error(resp: requests.Response) -> BinanceAPIError:
        code, msg = None, None
        try:
            body = resp.json()
            if isinstance(body, dict):
                code, msg = body.get("code"), body.get("msg")
        except ValueError:
            pass
        status = resp.status_code
        text = f"Binance HTTP {status}" + (f" (code {code}): {msg}" if msg else "")
        if status == 451:
            text += f" — restricted location; the market-data host {MARKET_DATA_URL} serves the same prices"
        if status in (418, 429):
            return BinanceRateLimited(text, status, code, _retry_after(resp))
        return BinanceAPIError(text, status, code)

    def ping(self, timeout: float = 3.0) -> None:
        self._get("/api/v3/ping", timeout=(timeout, timeout))

    def ticker_prices(self, symbols) -> list[PriceQuote]:
        """Last prices for all `symbols` in ONE request (weight 4)."""
        body, when = self._get("/api/v3/ticker/price", {"symbols": symbols_param(symbols)})
        if isinstance(body, dict):
            body = [body]
        try:
            return [PriceQuote(row["symbol"], float(row["price"]), when) for row in body]
        except (KeyError, TypeError, ValueError) as exc:
            raise BinanceBadResponse("ticker/price answer is not a list of {symbol, price}") from exc

    def klines(
        self,
        symbol: str,
        interval: str = "1s",
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = KLINES_MAX_LIMIT,
    ) -> list[Kline]:
        params = {"symbol": symbol, "interval": interval, "limit": min(int(limit), KLINES_MAX_LIMIT)}
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        body, _ = self._get("/api/v3/klines", params)
        try:
            return [
                Kline(ms_to_utc(int(r[0])), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in body
            ]
        except (IndexError, TypeError, ValueError) as exc:
            raise BinanceBadResponse("klines answer is not a list of 12-field rows") from exc

    def ticker_24h_quote_volumes(self) -> dict[str, float]:
        """Every symbol's quote-asset volume over the last 24 h, in ONE request (weight 80)."""
        body, _ = self._get("/api/v3/ticker/24hr", {"type": "MINI"})
        try:
            return {row["symbol"]: float(row["quoteVolume"]) for row in body}
        except (KeyError, TypeError, ValueError) as exc:
            raise BinanceBadResponse("ticker/24hr answer is not a list of {symbol, quoteVolume}") from exc

    def trading_quotes(self) -> dict[str, str]:
        """TRADING symbols and their quote asset (exchangeInfo, weight 20)."""
        body, _ = self._get("/api/v3/exchangeInfo", {"symbolStatus": "TRADING"})
        try:
            return {s["symbol"]: s["quoteAsset"] for s in body["symbols"] if s.get("status", "TRADING") == "TRADING"}
        except (KeyError, TypeError) as exc:
            raise BinanceBadResponse("exchangeInfo answer has no symbols list with quote assets") from exc

    def trading_symbols(self) -> list[str]:
        """Symbols whose status is TRADING, sorted."""
        return sorted(self.trading_quotes())
