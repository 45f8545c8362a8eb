"""Time per update of all per-tick analytics, full recompute vs incremental, per hedge method.

    python bench/analytics.py

For 1 h and 24 h of 1 s history of the simulated pair: a fresh `PairEngine` computing every bar
(full recompute: what a first paint or a settings change costs), then the same engine updated
for one new second (incremental: what every tick costs), both with the read of the open bar the
pages do. ADF, half-life and correlation (run every 30 s, not per tick) are timed apart. Target:
≤ 10 ms per incremental update at 24 h.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services import stats
from services.engine import PairEngine, Params
from services.hedge import METHODS
from services.sources import SimSource
from services.store import PriceStore
from timing import median_ms

T0 = 1_761_091_200
PAIR = ("BTCUSDT", "ETHUSDT")


def filled_store(history_s: int, extra_s: int):
    clock = [T0 + history_s + extra_s]
    sim = SimSource(seed=7, origin_s=T0 - 10, span_s=history_s + extra_s + 20, clock=lambda: clock[0])
    store = PriceStore(span_s=86_400)
    for sym in PAIR:
        store.add_ticks(sim.history(sym, T0, T0 + history_s - 1), raw=False)
    return store, sim


def bench(history_s: int, method: str, tf: str = "1s", window: int = 60, ticks: int = 30):
    store, sim = filled_store(history_s, ticks + 2)
    params = Params(PAIR, tf=tf, hedge=method, window=window)
    now = T0 + history_s
    engine = PairEngine(params, store, ffill_s=3, span_s=86_400)
    full = median_ms(lambda: engine.frame(now - 1, now, now))
    timings = []
    for k in range(ticks):
        s = now + k
        store.add_ticks([t for sym in PAIR for t in sim.history(sym, s, s)])
        timings.append(median_ms(lambda s=s: engine.frame(s - 1, s + 1, s + 1)))
    return full, statistics.median(timings), engine


def main():
    print(f"{'history':>8} {'method':>12} {'tf':>3} {'full recompute ms':>18} {'per tick ms':>12}")
    for label, history_s in (("1 h", 3_600), ("24 h", 86_400)):
        engines = {}
        for method in METHODS:
            for tf in ("1s", "1m"):
                full, tick, engines[tf] = bench(history_s, method, tf)
                print(f"{label:>8} {method:>12} {tf:>3} {full:18.1f} {tick:12.2f}")
        df = engines["1s"].committed_after(None).tail(stats.ADF_MAX_OBS)
        sp, a, b = df["spread"].to_numpy(), df[PAIR[0]].to_numpy(), df[PAIR[1]].to_numpy()
        print(
            f"{label:>8} ADF + half-life + corr on {len(df):,} bars (every 30 s): "
            f"{median_ms(lambda sp=sp, a=a, b=b: stats.summary(sp, a, b, 60), 3):.1f} ms"
        )


if __name__ == "__main__":
    main()
