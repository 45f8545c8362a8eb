"""Price history persisted in the embedded database, per source, pruned to the span.

`PriceStore` (memory) is what pages read; this is what survives a restart and what several
processes share: the worker that polls writes its ticks here, and any process that starts, or
finds a hole in its memory, reads what the others recorded before asking the exchange again.
Rows are keyed by source ("binance", "sim-7", ...) so a simulation never mixes with real prices.
"""

from __future__ import annotations

import functools

from sqlalchemy import delete, select

from services.db import FAILURES, Backlog, Database, buckets, dialect_insert, ticks
from services.sources import Tick, utc_from_epoch

MAX_UNWRITTEN_ROWS = 100_000  # of each kind: 40 symbols' seconds for 40 minutes


def _ns(tick: Tick) -> int:
    return round(tick.epoch * 1e9)


def _tick(symbol: str, tick_ns: int, price: float) -> Tick:
    return Tick(symbol, price, utc_from_epoch(tick_ns / 1e9))


@functools.cache
def _save_statements(dialect: str):
    """A save's two statements in `dialect`, built once: building them each second cost as much as
    running them. A bucket keeps the last tick of its second; a raw tick is stored once."""
    put_bars = dialect_insert(dialect, buckets)
    put_bars = put_bars.on_conflict_do_update(
        index_elements=[buckets.c.source, buckets.c.symbol, buckets.c.second],
        set_={"tick_ns": put_bars.excluded.tick_ns, "price": put_bars.excluded.price},
        where=put_bars.excluded.tick_ns > buckets.c.tick_ns,
    )
    return put_bars, dialect_insert(dialect, ticks).on_conflict_do_nothing()


class History:
    def __init__(self, db: Database, source_key: str, span_s: int):
        self.db = db
        self.source = source_key
        self.span_s = int(span_s)
        # what the database did not take while it was down, written with the next save
        self.unwritten_bars = Backlog("buckets", MAX_UNWRITTEN_ROWS)
        self.unwritten_ticks = Backlog("ticks", MAX_UNWRITTEN_ROWS)

    def save(self, bars: list[Tick], raw: list[Tick]) -> None:
        """Store bucket prices (the last tick of a second wins, as in memory) and raw ticks, with
        any a failed save left unwritten. Raises what the database raised, keeping them all (up to
        the bound) for the next save."""
        last = dict(self.unwritten_bars.rows)  # one row per (symbol, second): a statement may not touch a row twice
        for t in sorted(bars, key=_ns):
            key = (t.symbol, _ns(t) // 1_000_000_000)
            if key not in last or _ns(t) >= _ns(last[key]):
                last[key] = t
        raw_rows = {**self.unwritten_ticks.rows, **{(t.symbol, _ns(t)): t.price for t in raw}}
        if not last and not raw_rows:
            return
        try:
            self._write(last, raw_rows)
        except FAILURES:
            self.unwritten_bars.keep(last)
            self.unwritten_ticks.keep(raw_rows)
            raise
        self.unwritten_bars.clear()
        self.unwritten_ticks.clear()

    def _write(self, last: dict, raw_rows: dict) -> None:
        with self.db.write() as conn:
            put_bars, put_ticks = _save_statements(conn.dialect.name)
            if last:
                rows = [
                    {"source": self.source, "symbol": sym, "second": s, "tick_ns": _ns(t), "price": t.price}
                    for (sym, s), t in sorted(last.items())
                ]
                conn.execute(put_bars, rows)
            if raw_rows:
                rows = [
                    {"source": self.source, "symbol": sym, "tick_ns": ns, "price": p}
                    for (sym, ns), p in sorted(raw_rows.items())
                ]
                conn.execute(put_ticks, rows)

    def buckets(self, symbol: str, start_s: int, end_s: int) -> list[Tick]:
        """The stored last tick of each second in [start_s, end_s], oldest first."""
        rows = self.db.query(
            select(buckets.c.tick_ns, buckets.c.price)
            .where(buckets.c.source == self.source, buckets.c.symbol == symbol)
            .where(buckets.c.second.between(start_s, end_s))
            .order_by(buckets.c.second)
        )
        return [_tick(symbol, ns, p) for ns, p in rows]

    def recent_ticks(self, symbol: str, limit: int) -> list[Tick]:
        """The newest `limit` raw ticks, oldest first."""
        rows = self.db.query(
            select(ticks.c.tick_ns, ticks.c.price)
            .where(ticks.c.source == self.source, ticks.c.symbol == symbol)
            .order_by(ticks.c.tick_ns.desc())
            .limit(limit)
        )
        return [_tick(symbol, ns, p) for ns, p in reversed(rows)]

    def prune(self, now_s: float) -> int:
        """Forget everything older than the span (every source); returns the rows deleted."""
        cutoff = int(now_s) - self.span_s
        with self.db.write() as conn:
            n = conn.execute(delete(buckets).where(buckets.c.second < cutoff)).rowcount
            n += conn.execute(delete(ticks).where(ticks.c.tick_ns < cutoff * 1_000_000_000)).rowcount
        return n
