"""Binance's combined market streams: trades as they happen, on one WebSocket connection.

`TradeStream` keeps a connection to `{url}/stream?streams=btcusdt@aggTrade/...` on a thread of
its own and hands the trades over as `Tick`s stamped with the exchange's trade time (`T`), never
the time they arrived, in the order they came. It keeps the connection alive the way Binance's
rules ask:

- the server's pings are answered (websockets does it; the client sends none of its own);
- a connection quiet for QUIET_S is not live (REST polls meanwhile); one quiet for `watchdog_s`
  is dropped and made again (a stalled socket looks open);
- a `serverShutdown` event, and the 24 h limit (a planned reconnect 10 minutes before it), make a
  new connection;
- every reconnect waits a jittered, exponentially growing delay (0.5 s doubling to 30 s; a close
  for too many messages waits the longest);
- a change of symbols is made on the open connection with UNSUBSCRIBE and SUBSCRIBE, at most
  5 messages a second (Binance's limit per connection);
- malformed frames and unknown events are counted and skipped.

A deployment (web workers and the collector) holds ONE such connection, whichever process has
the lease (`StreamLease`, `StreamRelay`): the others read its trades through the shared cache.
While it is not live, every process polls REST as before (`StreamSource`, one request per poll
interval between them), so no second goes without a price; when it is back, the seconds it missed
are filled with their last trade.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from services import metrics
from services.binance import DEFAULT_STREAM_URL, BinanceClient, BinanceError, stream_for
from services.sources import BinanceSource, Tick, iso_utc

log = logging.getLogger(__name__)

WATCHDOG_S = 5.0  # no message for this long: the connection is dropped and made again
QUIET_S = 2.0  # no message for this long: REST polls meanwhile (two poll intervals at 1 s)
PLANNED_RECONNECT_S = 24 * 3_600 - 600  # Binance cuts a connection at 24 h
BACKOFF_S = (0.5, 30.0)  # first and longest wait between attempts
TOO_MANY_MESSAGES = 1008  # the close code of a connection that sent too many messages
SEND_GAP_S = 0.2  # at most 5 messages a second on a connection
RECV_STEP_S = 0.25  # how often the thread looks up from the socket (a change of symbols to send)
MAX_BUFFER = 100_000  # trades held between two drains (a reader that stopped draining loses the oldest)

# One connection per deployment (StreamLease, StreamRelay): keys in the shared cache.
LEASE_KEY = "stream:lease"
STATE_KEY = "stream:state"  # the holder's word on the connection, when it said it, and its batches so far
BATCH_KEY = "stream:batch"
LEASE_S = 3  # a holder that stops renewing loses the lease after this (whole seconds: the file cache's)
HEARTBEAT_S = 0.5  # the holder renews the lease and says how the connection is this often
STATE_KEEP_S = 3_600  # the last holder's newest trade, for the next holder's hole
RELAY_STEP_S = 0.1  # the holder hands the trades over this often
STATE_READ_S = HEARTBEAT_S  # the holder's word is read again after this (it says it this often)
RELAY_KEEP_S = 30  # a batch stays in the cache this long, for a process that reads it late
MAX_BATCHES_READ = 600  # batches asked for per relay step
PRIVATE_STATE = ("at", "last_trade_s", "token", "batches")  # in the shared state, not in /api/health
SAVE_EVERY_S = 1.0  # the holder writes what came in to the database this often (one transaction)
MAX_UNSUNK = 600  # batches waiting for a busy refresh (a minute of them)
FILL_AFTER_S = 1.5  # a hole is filled once its last second has closed (its 1 s kline is final)
FILL_RETRY_S = 5.0
MAX_FILL_S = 3_600  # the newest hour of a longer hole is filled exactly (the rest keeps REST's prices)


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
        self.last_trade_s: int | None = None  # the second of the newest trade received
        self._gap = False  # no trade yet since a new connection, or since a silence of QUIET_S
        self._holes: list[tuple[int, int]] = []  # seconds a reconnect may have missed trades in

    def resume_from(self, second: int) -> None:
        """Take over from a connection held elsewhere (or from REST polls) whose newest trade was
        in `second`: the seconds from there to this connection's first trade are reported as a hole."""
        with self._lock:
            self.last_trade_s = int(second)

    def move_to(self, url: str) -> None:
        """Stream from another host: an open connection is closed, and the next one goes there
        (the seconds in between are a hole, filled as after any reconnect)."""
        url = url.rstrip("/")
        if url == self.url:
            return
        log.warning("stream host: %s -> %s", self.url, url)
        self.url = url
        connection = self._connection
        if connection is not None:
            connection.close()

    # --- what the source asks ------------------------------------------------------------
    def follow(self, symbols) -> None:
        """Stream these symbols (starting the thread on the first call; a change is sent on the
        open connection by its thread)."""
        self._symbols = tuple(sorted(set(symbols)))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trade-stream", daemon=True)
            self._thread.start()

    def live(self) -> bool:
        """Connected, and a message came within QUIET_S (or the watchdog's time, if shorter): a
        stalled connection hands over to REST before the watchdog makes a new one."""
        last = self._last_message
        return self.connected and last is not None and self.clock() - last < min(QUIET_S, self.watchdog_s)

    def state(self) -> dict:
        """What /api/health says about the connection."""
        return {
            "url": self.url,
            "live": self.live(),
            "connected": self.connected,
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

    def holes(self) -> list[tuple[int, int]]:
        """The spans of seconds (first, last) that a break in the connection, or a silence of
        QUIET_S on it, may have missed trades in, since the last call: from the newest trade
        before it to the first after."""
        with self._lock:
            out, self._holes = self._holes, []
        return out

    def stop(self) -> None:
        """Close the connection and end its thread; `follow` starts it again."""
        self._stop.set()
        connection = self._connection
        if connection is not None:
            connection.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        self._stop.clear()

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
                    self._gap = True
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
            if self.clock() - heard >= QUIET_S:
                self._gap = True  # REST took over meanwhile: the seconds since the last trade are a hole
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
                second = int(tick.epoch)
                with self._lock:
                    self._ticks.append(tick)
                    if self._gap and self.last_trade_s is not None and second >= self.last_trade_s:
                        self._holes.append((self.last_trade_s, second))
                    self._gap = False
                    self.last_trade_s = max(second, self.last_trade_s or second)
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


class StreamLease:
    """Which process holds the deployment's one connection: a key in the shared cache, taken with
    an atomic add and renewed by its holder. A holder that stops renewing (dead, stuck) loses it
    after LEASE_S; a holder that finds the key taken by another steps down at its next renewal."""

    def __init__(self, cache, holder_id: str):
        self.cache = cache
        self.holder_id = holder_id

    def hold(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; True while this process holds it."""
        if self.cache.add(LEASE_KEY, self.holder_id, timeout=LEASE_S):
            return True
        if self.cache.get(LEASE_KEY) != self.holder_id:
            return False
        self.cache.set(LEASE_KEY, self.holder_id, timeout=LEASE_S)
        return True

    def release(self) -> None:
        if self.cache.get(LEASE_KEY) == self.holder_id:
            self.cache.delete(LEASE_KEY)


class StreamRelay:
    """One process's part in the deployment's stream (every web worker and the collector has one).

    A thread of its own, not a tab's tick, keeps the lease. While this process holds it, the
    thread connects (`TradeStream`), follows the watched symbols, and every RELAY_STEP_S hands the
    trades that came in to this process's store (`sink`) and publishes them in the shared cache as
    numbered batches; once a SAVE_EVERY_S it writes them to the database (`save`). In the other
    processes the same thread reads those batches as they come (`_collect`) and hands them to
    their stores, so every process holds every trade within a step or two, with or without a tab.
    When a broken connection comes back, the seconds it may have missed are filled from 1 s
    klines once they have closed (a kline's close is the last trade of its second), and published
    the same way, so every process holds the exchange's last trade of each second.
    """

    def __init__(self, cache, holder_id: str, source: StreamSource, watched, newest, sink, save, may_fetch, on_error):
        self.cache = cache
        self.holder_id = holder_id
        self.source = source
        self.watched = watched  # () -> the symbols to stream
        self.newest = newest  # () -> the second of the newest live trade this process holds, or None
        self.sink = sink  # (ticks, fill) -> bool: in this process's memory (False: busy, hand them over again)
        self.save = save  # (trades, filled) -> None: into the database (the holder's, once a SAVE_EVERY_S)
        self.may_fetch = may_fetch  # () -> False inside the exchange's Retry-After window
        self.on_error = on_error  # (BinanceError) -> None
        self.lease = StreamLease(cache, holder_id)
        self.holding = False
        self._token: str | None = None  # names this process's batches while it holds the lease
        self._seq = 0
        self._cursor: tuple[str, int] | None = None  # the last batch read from another holder
        self._unsunk: deque[tuple[list[Tick], bool]] = deque(maxlen=MAX_UNSUNK)
        self._unsaved: tuple[list[Tick], list[Tick]] = ([], [])  # (trades, filled) received since the last save
        self._next_save = 0.0
        self._holes: list[tuple[int, int]] = []
        self._next_fill = 0.0
        self._state: tuple[float, dict | None] = (-1.0, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the connection, write what it received, and hand the lease on at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.stream.stop()
        if self.holding:
            self._sink()
            self._save_due(now=True)
        self.lease.release()

    # --- every process -----------------------------------------------------------------------
    def shared_state(self) -> dict | None:
        """What the holder last said about the connection (read at most every STATE_READ_S)."""
        read_at, state = self._state
        if time.monotonic() - read_at >= STATE_READ_S:
            state = self.cache.get(STATE_KEY)
            self._state = (time.monotonic(), state)
        return state

    def live(self) -> bool:
        """The deployment's connection is live, wherever it is held, and its holder is alive."""
        state = self.shared_state()
        return bool(state and state["live"] and time.time() - state["at"] < LEASE_S)

    def state(self) -> dict:
        """What /api/health says about the stream."""
        state = self.shared_state()
        if state is None or time.time() - state["at"] >= LEASE_S:
            return {**self.source.stream.state(), "live": False, "holder": None, "held_here": False}
        return {**{k: v for k, v in state.items() if k not in PRIVATE_STATE}, "held_here": self.holding}

    def _collect(self) -> list[tuple[str, list[Tick]]]:
        """The batches ("trades" or "fill", ticks) another process published since the last call:
        the next ones of the holder last read until one is missing, then the current holder's
        (named in its state, with how many it had published then) from its first. A batch the
        holder said it had published but that is not there (expired unread, or published while
        the shared cache was down) is passed over: the ones after it still come in."""
        state = self.shared_state()
        head = (state["token"], state["batches"]) if state and state.get("token") else None
        if head is None or head[0] == self._token:
            return []  # no holder yet, or this process's own (already stored)
        token, seq = self._cursor or head
        out, reads = [], 0
        while True:
            said = head[1] if token == head[0] else 0
            while reads < MAX_BATCHES_READ:
                reads += 1
                batch = self.cache.get(f"{BATCH_KEY}:{token}:{seq + 1}")
                if batch is None and seq >= said:
                    break  # not published yet
                seq += 1
                if batch is not None:
                    out.append(batch)
            if token == head[0]:
                break
            token, seq = head[0], 0  # a new holder: its batches from the first
        self._cursor = (token, seq)
        return out

    # --- the relay's thread --------------------------------------------------------------------
    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.wait(RELAY_STEP_S):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._beat()
                if self.holding:
                    self._hand_over()
                else:
                    self._unsunk.extend((ticks, kind == "fill") for kind, ticks in self._collect())
                self._sink()
                self._save_due()
            except Exception:  # a cache or database fault: the next step tries again
                log.exception("stream relay")

    def _beat(self) -> None:
        """Renew or take the lease; connect or step down; say how the connection is."""
        held = self.lease.hold()
        stream = self.source.stream
        if held and not self.holding:
            # The hole starts at the earlier of the last holder's newest trade and this process's (a
            # follower cut off from the holder's batches, as when Redis stops answering): the seconds
            # after it are filled. Filling a second already held is harmless: the fill is exact.
            previous = self.cache.get(STATE_KEY) or {}
            known = [s for s in (previous.get("last_trade_s"), self.newest()) if s is not None]
            stream.resume_from(min(known) if known else int(time.time()))
            self._token, self._seq = f"{self.holder_id}-{uuid.uuid4().hex[:8]}", 0
            log.info("this process holds the stream connection now")
        elif self.holding and not held:
            stream.stop()
            self._save_due(now=True)
            log.info("another process holds the stream connection now")
        self.holding = held
        if held:
            stream.follow(self.watched())
            state = {
                **stream.state(),
                "holder": self.holder_id,
                "at": time.time(),
                "last_trade_s": stream.last_trade_s,
                "token": self._token,
                "batches": self._seq,
            }
            self.cache.set(STATE_KEY, state, timeout=STATE_KEEP_S)
            self._state = (time.monotonic(), state)  # what this process said: no need to read it back

    def _hand_over(self) -> None:
        ticks = self.source.stream.drain()
        if ticks:
            self._publish("trades", ticks)
            self._unsunk.append((ticks, False))
            self._unsaved[0].extend(ticks)
        self._holes += self.source.stream.holes()
        self._fill_closed_holes()

    def _sink(self) -> None:
        while self._unsunk:
            batch = self._unsunk.popleft()  # (a sink that raised loses it: logged)
            if not self.sink(*batch):
                self._unsunk.appendleft(batch)
                break

    def _save_due(self, now: bool = False) -> None:
        """This connection's trades and fills into the database, in one write a SAVE_EVERY_S."""
        if (now or time.monotonic() >= self._next_save) and (self._unsaved[0] or self._unsaved[1]):
            unsaved, self._unsaved = self._unsaved, ([], [])
            self._next_save = time.monotonic() + SAVE_EVERY_S
            self.save(*unsaved)

    def _fill_closed_holes(self) -> None:
        """The last trade of each second of the holes whose seconds have all closed, from 1 s klines."""
        now = time.time()
        due = [h for h in self._holes if now >= h[1] + 1 + FILL_AFTER_S]
        if not due or now < self._next_fill or not self.may_fetch():
            return
        first, last = due[0]
        try:
            ticks = [t for s in self.watched() for t in self.source.history(s, max(first, last - MAX_FILL_S), last)]
        except BinanceError as exc:
            self.on_error(exc)
            self._next_fill = now + FILL_RETRY_S
            return
        self._holes.remove(due[0])
        metrics.STREAM_FILLED.inc(len(ticks))
        log.info("stream hole %s..%s filled: %d seconds", iso_utc(first), iso_utc(last), len(ticks))
        self._publish("fill", ticks)
        self._unsunk.append((ticks, True))
        self._unsaved[1].extend(ticks)

    def _publish(self, kind: str, ticks: list[Tick]) -> None:
        self._seq += 1
        self.cache.set(f"{BATCH_KEY}:{self._token}:{self._seq}", (kind, ticks), timeout=RELAY_KEEP_S)


class StreamSource(BinanceSource):
    """Binance with trades from the deployment's stream while it is live (they come through the
    market's `StreamRelay`, whichever process holds the connection), and the REST ticker (one
    request per poll interval, as `BinanceSource`) while it is not: connecting, reconnecting,
    stalled, or its holder gone. Symbols, history and the scanner's data come from REST."""

    kind = "stream"

    def __init__(self, client: BinanceClient, stream_url: str, clock=None):
        """`stream_url`: --stream-url. Left at its default, the stream is the REST host's own
        (`binance.stream_for`), and moves with it (a 451, the Settings page)."""
        super().__init__(client, clock)
        self.configured_stream_url = stream_url
        self.stream = TradeStream(self._stream_url())
        self.relay: StreamRelay | None = None  # set by the market that opens it

    def _stream_url(self) -> str:
        return stream_for(self.client.base_url, self.configured_stream_url) or self.configured_stream_url

    def set_base_url(self, url: str) -> None:
        super().set_base_url(url)
        self.stream.move_to(self._stream_url())

    def live(self) -> bool:
        return self.relay is not None and self.relay.live()

    @property
    def label(self) -> str:
        if self.live():
            return f"Binance stream · {self.stream.url}"
        connected = self.relay is not None and self.relay.state().get("connected")
        return f"Binance REST · {self.client.base_url} (stream {'quiet' if connected else 'down'})"

    def poll(self, symbols) -> list[Tick]:
        """Nothing while the stream is live (its trades come through the relay), else the REST
        ticker's prices."""
        return [] if self.live() else super().poll(symbols)
