"""What schema version 2's indexes buy: the time of one prune (the rows older than the span, every
5 minutes) in an SQLite store of `--symbols` symbols x `--hours` of 1 s buckets, with version 1's
tables (primary keys only: source and symbol first) and with version 2's (an index on the time).

    python bench/prune.py --symbols 40 --hours 6
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.db import Database
from services.history import History

T0 = 1_761_091_200
PRUNE_EVERY_S = 300


def fill(path: Path, symbols: int, seconds: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO buckets VALUES ('binance', ?, ?, ?, 100.0)",
            ((f"S{i:03d}USDT", T0 + s, (T0 + s) * 10**9) for i in range(symbols) for s in range(seconds)),
        )


def prune_ms(data: Path, symbols: int, seconds: int, drop_indexes: bool) -> float:
    db = Database(data)
    db.query("SELECT 1")  # this version's schema
    if drop_indexes:  # version 1's shape
        with sqlite3.connect(db.path) as conn:
            conn.execute("DROP INDEX buckets_by_second")
            conn.execute("DROP INDEX ticks_by_time")
    fill(db.path, symbols, seconds)
    history = History(Database(data), "binance", span_s=seconds - PRUNE_EVERY_S)
    start = time.perf_counter()
    deleted = history.prune(T0 + seconds)
    took = (time.perf_counter() - start) * 1000
    assert deleted == symbols * PRUNE_EVERY_S, deleted
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=40)
    p.add_argument("--hours", type=float, default=6)
    args = p.parse_args()
    seconds = int(args.hours * 3600)
    rows = args.symbols * seconds
    print(
        f"{rows:,} buckets ({args.symbols} symbols x {seconds:,} s); one prune deletes {args.symbols * PRUNE_EVERY_S:,}"
    )
    for label, drop in (("version 1 (primary keys only)", True), ("version 2 (index on the time)", False)):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"  {label}: {prune_ms(Path(tmp), args.symbols, seconds, drop):,.0f} ms")


if __name__ == "__main__":
    main()
