"""A Binance-shaped market-stream server (WebSocket) on 127.0.0.1, with fault switches, and the
trade tape it streams.

`TradeTape` is the exchange's trades: `trades_per_s` a second for each symbol, at prices that move
within the second around the REST fake's `price(symbol, second)`, so the last trade of a second
(`last_of_second`) is not what a REST poll earlier in that second saw. Attached to the REST fake
(`FakeBinance.tape`), its ticker answers the last trade so far and its 1 s klines close at the last
trade of their second, as Binance's do: both sources tell one story.

The server serves `/stream?streams=btcusdt@aggTrade/...` as Binance does: each message is
`{"stream": name, "data": {"e": "aggTrade", "s", "p", "q", "T", ...}}`, every trade of the tape
from the moment the client connected, stamped with its trade time `T` in ms. It pings the client
every `ping_interval` s and drops a client that does not answer. `open` counts the connections open
now, `connections` every handshake accepted.

A client's `{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}` changes its streams
and is answered `{"result": null, "id": n}`; a client that sends more than 5 messages in a second
is closed with code 1008, as Binance does. `requests` logs what clients sent.

Switches: `drop()` cuts every connection (no close frame), `stall(s)` goes quiet for s seconds
with the connection open (the trades of those seconds are never sent), `shutdown()` sends a
`serverShutdown` event, `flooded()` closes connections with 1008, `garbage()` sends a malformed
frame and an unknown event, and `refuse = True` answers handshakes with HTTP 503.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import serve

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class TradeTape:
    def __init__(self, price, symbols=SYMBOLS, trades_per_s: int = 10):
        self.price = price
        self.trades_per_s = trades_per_s
        self._ms: dict[str, list[int]] = {s: [] for s in symbols}  # trade times, ascending
        self._prices: dict[str, list[float]] = {s: [] for s in symbols}
        self._ids: dict[str, list[int]] = {s: [] for s in symbols}
        self._next_id = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1.0 / self.trades_per_s):
            ms = int(time.time() * 1000)
            with self._lock:
                for symbol in self._ms:
                    self._next_id += 1
                    step = self._next_id % 7 - 3  # moves within the second
                    self._ms[symbol].append(ms)
                    self._prices[symbol].append(round(self.price(symbol, ms // 1000) + 0.01 * step, 2))
                    self._ids[symbol].append(self._next_id)

    def trades_since(self, symbol: str, index: int) -> tuple[list[tuple[int, int, float]], int]:
        """(id, T ms, price) of the trades from `index` on, and the index after them."""
        with self._lock:
            ms, prices, ids = self._ms.get(symbol, []), self._prices.get(symbol, []), self._ids.get(symbol, [])
            return list(zip(ids[index:], ms[index:], prices[index:], strict=True)), len(ms)

    def end(self, symbol: str) -> int:
        with self._lock:
            return len(self._ms.get(symbol, []))

    def last(self, symbol: str, at_ms: int) -> float | None:
        """The price of the last trade at or before `at_ms`."""
        with self._lock:
            i = bisect.bisect_right(self._ms.get(symbol, []), at_ms)
            return self._prices[symbol][i - 1] if i else None

    def last_of_second(self, symbol: str, second: int) -> float | None:
        """The price of the last trade in UTC second `second` (None: no trade in it)."""
        with self._lock:
            ms = self._ms.get(symbol, [])
            i = bisect.bisect_right(ms, second * 1000 + 999)
            return self._prices[symbol][i - 1] if i and ms[i - 1] >= second * 1000 else None


class FakeStream:
    def __init__(self, tape: TradeTape, ping_interval: float = 20.0):
        self.tape = tape
        self.refuse = False
        self.connections = 0  # handshakes accepted
        self.open = 0  # connections open now
        self._lock = threading.Lock()
        self._generation = 0  # bumped by drop(): every open connection ends
        self._quiet_until = 0.0
        self._events: list[dict | str] = []  # sent to every connection, once
        self.requests: list[dict] = []
        self._flooded = False
        self.server = serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._gate,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            compression=None,
        )
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    # --- switches --------------------------------------------------------------------------
    def drop(self) -> None:
        with self._lock:
            self._generation += 1

    def stall(self, seconds: float) -> None:
        self._quiet_until = time.time() + seconds

    def shutdown(self) -> None:
        self._events.append({"e": "serverShutdown", "E": int(time.time() * 1000)})

    def flooded(self) -> None:
        """Close every connection as Binance closes one that sent too many messages."""
        self._flooded = True

    def garbage(self) -> None:
        self._events.extend(["{not json", {"e": "somethingNew", "E": int(time.time() * 1000)}])

    # --- serving ---------------------------------------------------------------------------
    def _gate(self, connection, request):
        if self.refuse:
            return Response(503, "Service Unavailable", Headers(), b"")
        return None

    def _handler(self, ws) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        names = query.get("streams", [""])[0].split("/")
        symbols = [n.split("@")[0].upper() for n in names if n.endswith("@aggTrade")]
        with self._lock:
            self.connections += 1
            self.open += 1
            generation = self._generation
        seen_events = len(self._events)
        received: list[float] = []
        cursor: dict[str, int] = {}  # symbol -> index of its next trade on the tape
        try:
            while True:
                if self._flooded:
                    ws.close(1008, "Too many messages")
                    return
                if not self._answer(ws, symbols, received):
                    return
                with self._lock:
                    if self._generation != generation:
                        ws.socket.close()  # cut, no close frame: as a network failure looks
                        return
                for event in self._events[seen_events:]:
                    ws.send(event if isinstance(event, str) else json.dumps({"stream": "!", "data": event}))
                seen_events = len(self._events)
                for symbol in symbols:
                    trades, cursor[symbol] = self.tape.trades_since(symbol, cursor.get(symbol, self.tape.end(symbol)))
                    if time.time() >= self._quiet_until:
                        for trade in trades:
                            self._send_trade(ws, symbol, *trade)
                time.sleep(0.02)
        except (ConnectionClosed, OSError):
            return
        finally:
            with self._lock:
                self.open -= 1

    def _answer(self, ws, symbols: list[str], received: list[float]) -> bool:
        """Handle what the client sent; False once it is closed for sending too much."""
        while True:
            try:
                raw = ws.recv(timeout=0)
            except TimeoutError:
                return True
            now = time.time()
            received[:] = [t for t in received if now - t < 1.0] + [now]
            if len(received) > 5:
                ws.close(1008, "Too many messages")
                return False
            request = json.loads(raw)
            self.requests.append(request)
            names = [n.split("@")[0].upper() for n in request.get("params", [])]
            if request.get("method") == "SUBSCRIBE":
                symbols.extend(n for n in names if n not in symbols)
            elif request.get("method") == "UNSUBSCRIBE":
                symbols[:] = [n for n in symbols if n not in names]
            ws.send(json.dumps({"result": None, "id": request.get("id")}))

    def _send_trade(self, ws, symbol: str, trade_id: int, ms: int, price: float) -> None:
        data = {
            "e": "aggTrade",
            "E": ms + 1,
            "s": symbol,
            "a": trade_id,
            "p": f"{price:.8f}",
            "q": "0.01000000",
            "f": trade_id,
            "l": trade_id,
            "T": ms,
            "m": False,
            "M": True,
        }
        ws.send(json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data}))
