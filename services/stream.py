"""Binance's combined market streams: trades as they happen, on one WebSocket connection.

`TradeStream` keeps a connection to `{url}/stream?streams=btcusdt@aggTrade/...` on a thread of
its own and hands the trades over as `Tick`s stamped with the exchange's trade time (`T`), never
the time they arrived, in the order they came. It keeps the connection alive the way Binance's
rules ask:

- the server's pings are answered (websockets does it; the client sends none of its own);
- a connection that goes quiet for `watchdog_s` is dropped and made again (a stalled socket
  looks open);
- a `serverShutdown` event, and the 24 h limit (a planned reconnect 10 minutes before it), make a
  new connection;
- every reconnect waits a jittered, exponentially growing delay (0.5 s doubling to 30 s; a close
  for too many messages waits the longest);
- a change of symbols is made on the open connection with UNSUBSCRIBE and SUBSCRIBE, at most
  5 messages a second (Binance's limit per connection);
- malformed frames and unknown events are counted and skipped.

While it is not live (`live()`), the caller polls REST instead (services/sources.py
`StreamSource`), so no second goes without a price.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from datetime import UTC, datetime

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from services import metrics
from services.binance import DEFAULT_STREAM_URL, BinanceClient
from services.sources import BinanceSource, Tick

log = logging.getLogger(__name__)

WATCHDOG_S = 5.0  # no message for this long: the connection is dropped and made again
PLANNED_RECONNECT_S = 24 * 3_600 - 600  # Binance cuts a connection at 24 h
BACKOFF_S = (0.5, 30.0)  # first and longest wait between attempts
TOO_MANY_MESSAGES = 1008  # the close code of a connection that sent too many messages
SEND_GAP_S = 0.2  # at most 5 messages a second on a connection
RECV_STEP_S = 0.25  # how often the thread looks up from the socket (a change of symbols to send)
MAX_BUFFER = 100_000  # trades held between two drains (a reader that stopped draining loses the oldest)


def trade(data: dict) -> Tick:
    """An aggTrade payload as a Tick at its trade time. Raises KeyError, TypeError, ValueError."""
    return Tick(str(data["s"]), float(data["p"]), datetime.fromtimestamp(int(data["T"]) / 1000.0, tz=UTC))


def stream_names(symbols) -> list[str]:
    return [f"{s.lower()}@aggTrade" for s in symbols]


class TradeStream:
    def __init__(self, url: str = DEFAULT_STREAM_URL, watchdog_s: float = WATCHDOG_S, clock=time.monotonic):
        self.url = url.rstrip("/")
        self.watchdog_s = watchdog_s
        self.clock = clock
        self._symbols: tuple[str, ...] = ()
        self._ticks: deque[Tick] = deque(maxlen=MAX_BUFFER)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed: set[str] = set()  # the symbols the open connection streams
        self._last_send = 0.0
        self._request_id = 0
        self._thread: threading.Thread | None = None
        self._last_message: float | None = None
        self._connection = None
        self.connected = False
        self.messages = 0
        self.malformed = 0
        self.unknown = 0
        self.reconnects = 0
        self.last_error = ""

    # --- what the source asks ------------------------------------------------------------
    def follow(self, symbols) -> None:
        """Stream these symbols (starting the thread on the first call; a change is sent on the
        open connection by its thread)."""
        self._symbols = tuple(sorted(set(symbols)))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trade-stream", daemon=True)
            self._thread.start()

    def live(self) -> bool:
        """Connected, and a message came within the watchdog's time."""
        last = self._last_message
        return self.connected and last is not None and self.clock() - last < self.watchdog_s

    def state(self) -> dict:
        """What /api/health says about the connection."""
        return {
            "url": self.url,
            "live": self.live(),
            "symbols": sorted(self._subscribed),
            "messages": self.messages,
            "malformed": self.malformed,
            "unknown_events": self.unknown,
            "reconnects": self.reconnects,
            "last_error": self.last_error or None,
        }

    def drain(self) -> list[Tick]:
        """The trades received since the last drain, oldest first."""
        with self._lock:
            out = list(self._ticks)
            self._ticks.clear()
        return out

    def stop(self) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None:
            connection.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the connection's thread -----------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_S[0]
        while not self._stop.is_set():
            symbols = self._symbols
            url = f"{self.url}/stream?streams={'/'.join(stream_names(symbols))}"
            started = self.clock()
            try:
                with connect(url, open_timeout=5, close_timeout=2, ping_interval=None, compression=None) as ws:
                    self._connection = ws
                    self._subscribed = set(symbols)
                    self.connected = True
                    got_one = self._receive(ws, started)
                    delay = BACKOFF_S[0] if got_one else delay
            except ConnectionClosed as exc:
                self.last_error = f"the stream closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
                if exc.rcvd is not None and exc.rcvd.code == TOO_MANY_MESSAGES:
                    delay = BACKOFF_S[1]
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.last_error = f"the stream could not connect: {exc.__class__.__name__}: {exc}"
            finally:
                self.connected = False
                self._connection = None
            if self._stop.is_set():
                break
            self.reconnects += 1
            metrics.STREAM_RECONNECTS.inc()
            log.warning("stream down (%s); reconnecting in %.1f s", self.last_error, delay)
            self._stop.wait(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, BACKOFF_S[1])

    def _receive(self, ws, started: float) -> bool:
        """Messages until the connection must be made again; True if any came."""
        got_one, heard = False, self.clock()
        while not self._stop.is_set():
            if self.clock() - started > PLANNED_RECONNECT_S:
                self.last_error = "planned reconnect before Binance's 24 h limit"
                return got_one
            self._resubscribe(ws)
            try:
                raw = ws.recv(timeout=RECV_STEP_S)
            except TimeoutError:
                if self.clock() - heard >= self.watchdog_s:
                    self.last_error = f"no message for {self.watchdog_s:g} s"
                    return got_one
                continue
            heard = self.clock()
            got_one = True
            self._last_message = self.clock()
            self.messages += 1
            metrics.STREAM_MESSAGES.inc()
            if self._handle(raw) == "shutdown":
                self.last_error = "the server announced a shutdown"
                return got_one
        return got_one

    def _resubscribe(self, ws) -> None:
        """Send what changed in the symbols: UNSUBSCRIBE, then SUBSCRIBE, one message per turn
        and at least SEND_GAP_S apart."""
        wanted = set(self._symbols)
        gone, new = self._subscribed - wanted, wanted - self._subscribed
        if not (gone or new) or self.clock() - self._last_send < SEND_GAP_S:
            return
        method, symbols = ("UNSUBSCRIBE", gone) if gone else ("SUBSCRIBE", new)
        self._request_id += 1
        ws.send(json.dumps({"method": method, "params": stream_names(sorted(symbols)), "id": self._request_id}))
        self._last_send = self.clock()
        self._subscribed = self._subscribed - gone if gone else self._subscribed | new

    def _handle(self, raw) -> str:
        try:
            message = json.loads(raw)
            data = message.get("data", message) if isinstance(message, dict) else None
            if not isinstance(data, dict):
                raise ValueError("not an object")
            event = data.get("e")
            if event == "aggTrade":
                tick = trade(data)
                with self._lock:
                    self._ticks.append(tick)
                return "trade"
            if event == "serverShutdown":
                return "shutdown"
            if "result" in data and "id" in data:
                return "ack"  # the answer to a (un)subscribe
        except (ValueError, KeyError, TypeError, OverflowError):
            self.malformed += 1
            metrics.STREAM_MALFORMED.inc()
            return "malformed"
        self.unknown += 1
        return "unknown"


class StreamSource(BinanceSource):
    """Binance with trades from the stream while it is live, and the REST ticker (one request
    per poll interval, as `BinanceSource`) while it is not: connecting, reconnecting, stalled.
    Symbols, history and the scanner's data come from REST as before."""

    kind = "stream"

    def __init__(self, client: BinanceClient, stream_url: str, clock=None):
        super().__init__(client, clock)
        self.stream = TradeStream(stream_url)

    @property
    def label(self) -> str:
        if self.stream.live():
            return f"Binance stream · {self.stream.url}"
        return f"Binance REST · {self.client.base_url} (stream down)"

    def poll(self, symbols) -> list[Tick]:
        """The trades since the last poll while the stream is live (none in a quiet interval),
        else the REST ticker's prices (with any trades that came in meanwhile)."""
        self.stream.follow(symbols)
        wanted = set(symbols)
        if self.stream.live():
            return [t for t in self.stream.drain() if t.symbol in wanted]
        streamed = [t for t in self.stream.drain() if t.symbol in wanted]
        return streamed + super().poll(symbols)
