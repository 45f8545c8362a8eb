"""Time per tick with 1 h and 24 h of 1 s history (simulated pair, no network, no HTTP).

    python bench/callbacks.py

For each history length it fills the store, then times (median of N runs):
- tick: one refresh (poll + ingest + alert rules) and the snapshot every read of the tick uses;
- /analytics for the first tab of a second: cards, statistics panel and the three charts' tails,
  computed (what one tick costs the server, whatever the number of tabs);
- /analytics for every further tab of that second: the same answer from the shared memo;
- whole z chart of the default 15 min, and of the whole history (24 h: downsampled to at most
  ~2,000 points per trace), with its size as Dash sends it;
- the stats card (latest bar).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from cachelib import SimpleCache
from plotly.io.json import to_json_plotly

from app import create_app
from pages._tick import chart
from services.market import MarketService
from services.settings import AppConfig
from services.singleflight import SingleFlight
from services.sources import SimSource
from timing import median_ms

VIEW = {"range": "15m", "corr": 60, "zoom": {}}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def bench(history_s: int, runs: int = 30) -> dict:
    clock = Clock(1_761_091_200.5 + history_s)
    cfg = AppConfig(source="sim", data_dir=tempfile.mkdtemp(), history_s=86_400)
    source = SimSource(seed=7, origin_s=int(clock()) - history_s - 10, span_s=86_400, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    create_app(cfg, market)  # registers the pages
    from pages import analytics

    for sym in ("BTCUSDT", "ETHUSDT"):
        market.store.add_ticks(source.history(sym, int(clock()) - history_s, int(clock())), raw=False)
    market.tick()
    cursor = analytics.build(market, market.snapshot(), VIEW, {})[1]

    def tick():
        clock.now += 1
        return market.tick()

    def first_tab():
        nonlocal cursor
        snap = tick()
        values, cursor = analytics.build(market, snap, VIEW, cursor)
        to_json_plotly(values)

    def further_tab():
        values, _ = analytics.build(market, market.snapshot(), VIEW, cursor)
        to_json_plotly(values)

    def whole(range_name):
        market.analyses.shared = SingleFlight()  # computed, not served from the memo
        update, _ = chart("zscore", market, market.snapshot(), range_name, None)
        return len(to_json_plotly(update))

    whole_range = "24h" if history_s > 21_600 else "1h"
    results = {
        "tick (refresh + snapshot)": median_ms(tick, runs),
        "/analytics, first tab of a second": median_ms(first_tab, runs) - median_ms(tick, runs),
        "/analytics, every further tab": median_ms(further_tab, runs),
        "whole z chart, 15 min": median_ms(lambda: whole("15m"), runs),
        f"whole z chart, {whole_range}": median_ms(lambda: whole(whole_range), max(3, runs // 5)),
        "stats card (latest bar)": median_ms(lambda: market.latest(market.snapshot()), runs),
    }
    results[f"whole z chart JSON, {whole_range}, KiB"] = whole(whole_range) / 1024
    results["store MiB"] = market.store.nbytes() / 2**20
    return results, market, further_tab


def main():
    for label, seconds in (("1 h", 3_600), ("24 h", 86_400)):
        print(f"history {label}:")
        for name, value in bench(seconds)[0].items():
            unit = name.rsplit(" ", 1)[-1] if name.endswith(("MiB", "KiB")) else "ms"
            print(f"  {name:48s} {value:8.2f} {unit}")


if __name__ == "__main__":
    main()
