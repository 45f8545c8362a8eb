"""Price history persisted in the embedded database, per source, pruned to the span.

`PriceStore` (memory) is what pages read; this is what survives a restart and what several
processes share: the worker that polls writes its ticks here, and any process that starts, or
finds a hole in its memory, reads what the others recorded before asking the exchange again.
Rows are keyed by source ("binance", "sim-7", ...) so a simulation never mixes with real prices.
"""

from __future__ import annotations

from services.db import Database
from services.sources import Tick, utc_from_epoch

UPSERT_BUCKET = """
INSERT INTO buckets (source, symbol, second, tick_ns, price) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (source, symbol, second) DO UPDATE SET tick_ns = excluded.tick_ns, price = excluded.price
WHERE excluded.tick_ns > buckets.tick_ns
"""


def _ns(tick: Tick) -> int:
    return round(tick.epoch * 1e9)


def _tick(symbol: str, tick_ns: int, price: float) -> Tick:
    return Tick(symbol, price, utc_from_epoch(tick_ns / 1e9))


class History:
    def __init__(self, db: Database, source_key: str, span_s: int):
        self.db = db
        self.source = source_key
        self.span_s = int(span_s)

    def save(self, buckets: list[Tick], raw: list[Tick]) -> None:
        """Store bucket prices (the last tick of a second wins, as in memory) and raw ticks."""
        if not buckets and not raw:
            return
        with self.db.write() as conn:
            conn.executemany(
                UPSERT_BUCKET, [(self.source, t.symbol, _ns(t) // 1_000_000_000, _ns(t), t.price) for t in buckets]
            )
            conn.executemany(
                "INSERT OR IGNORE INTO ticks VALUES (?, ?, ?, ?)",
                [(self.source, t.symbol, _ns(t), t.price) for t in raw],
            )

    def buckets(self, symbol: str, start_s: int, end_s: int) -> list[Tick]:
        """The stored last tick of each second in [start_s, end_s], oldest first."""
        rows = self.db.query(
            "SELECT tick_ns, price FROM buckets WHERE source = ? AND symbol = ? "
            "AND second BETWEEN ? AND ? ORDER BY second",
            (self.source, symbol, start_s, end_s),
        )
        return [_tick(symbol, ns, p) for ns, p in rows]

    def recent_ticks(self, symbol: str, limit: int) -> list[Tick]:
        """The newest `limit` raw ticks, oldest first."""
        rows = self.db.query(
            "SELECT tick_ns, price FROM ticks WHERE source = ? AND symbol = ? ORDER BY tick_ns DESC LIMIT ?",
            (self.source, symbol, limit),
        )
        return [_tick(symbol, ns, p) for ns, p in reversed(rows)]

    def prune(self, now_s: float) -> int:
        """Forget everything older than the span (every source); returns the rows deleted."""
        cutoff = int(now_s) - self.span_s
        with self.db.write() as conn:
            n = conn.execute("DELETE FROM buckets WHERE second < ?", (cutoff,)).rowcount
            n += conn.execute("DELETE FROM ticks WHERE tick_ns < ?", (cutoff * 1_000_000_000,)).rowcount
        return n
