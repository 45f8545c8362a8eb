"""A Binance-shaped market-stream server (WebSocket) on 127.0.0.1, with fault switches.

It serves `/stream?streams=btcusdt@aggTrade/...` as Binance does: each message is
`{"stream": name, "data": {"e": "aggTrade", "s", "p", "q", "T", ...}}`, `trades_per_s` trades per
symbol a second at prices from `price(symbol, second)` (the REST fake's, so both sources agree),
each stamped with its trade time `T` in ms. It pings the client every `ping_interval` s and drops a
client that does not answer. `sent[symbol][second]` is the last trade price of each second sent.

A client's `{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}` changes its streams
and is answered `{"result": null, "id": n}`; a client that sends more than 5 messages in a second
is closed with code 1008, as Binance does. `requests` logs what clients sent.

Switches: `drop()` cuts every connection (no close frame), `stall(s)` goes quiet for s seconds
with the connection open, `shutdown()` sends a `serverShutdown` event, `flooded()` closes
connections with 1008, `garbage()` sends a malformed frame and an unknown event, and
`refuse = True` answers handshakes with HTTP 503.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import serve


class FakeStream:
    def __init__(self, price, trades_per_s: int = 10, ping_interval: float = 20.0):
        self.price = price
        self.trades_per_s = trades_per_s
        self.refuse = False
        self.connections = 0  # handshakes accepted
        self.sent: dict[str, dict[int, float]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._generation = 0  # bumped by drop(): every open connection ends
        self._quiet_until = 0.0
        self._events: list[dict | str] = []  # sent to every connection, once
        self._trade_id = 0
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
            generation = self._generation
        seen_events = len(self._events)
        received: list[float] = []
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
                if time.time() >= self._quiet_until:
                    for symbol in symbols:
                        self._send_trade(ws, symbol)
                time.sleep(1.0 / self.trades_per_s)
        except (ConnectionClosed, OSError):
            return

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

    def _send_trade(self, ws, symbol: str) -> None:
        now = time.time()
        second = int(now)
        price = self.price(symbol, second)
        with self._lock:
            self._trade_id += 1
            trade_id = self._trade_id
            self.sent[symbol][second] = price
        data = {
            "e": "aggTrade",
            "E": int(now * 1000) + 1,
            "s": symbol,
            "a": trade_id,
            "p": f"{price:.8f}",
            "q": "0.01000000",
            "f": trade_id,
            "l": trade_id,
            "T": int(now * 1000),
            "m": False,
            "M": True,
        }
        ws.send(json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data}))
