"""Time per interval callback with 1 h and 24 h of 1 s history (simulated pair, no network).

    python bench/callbacks.py

For each history length it fills the store, then times, per tick (median of N runs):
- refresh: one poll + ingest + alert evaluation of the new bucket;
- z-chart increment: what the /analytics z chart sends each second (extendData), serialised;
- z-chart full render of the default 15 min range and of the whole history (on first paint or a
  settings change), serialised as Dash sends it (`bench/analytics.py` compares full and
  incremental analytics);
- stats card: current z, spread, mean, std.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cachelib import SimpleCache
from plotly.io.json import to_json_plotly

from pages._live import chart_update
from services.market import MarketService
from services.settings import AppConfig
from services.sources import SimSource
from timing import median_ms


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
    market.store.add_ticks(source.history("BTCUSDT", int(clock()) - history_s, int(clock())), raw=False)
    market.store.add_ticks(source.history("ETHUSDT", int(clock()) - history_s, int(clock())), raw=False)
    market.refresh()

    def tick_refresh():
        clock.now += 1
        market.refresh()

    state = {}

    def z_increment():
        nonlocal state
        clock.now += 1
        market.refresh()
        fig, extend, state = chart_update("zscore", market, "15m", state)
        to_json_plotly([fig, extend])

    def full_render(range_name):
        fig, _, _ = chart_update("zscore", market, range_name, None)
        return len(to_json_plotly(fig))

    chart_update("zscore", market, "15m", None)
    _, _, state = chart_update("zscore", market, "15m", None)
    results = {
        "refresh (poll+ingest+alerts)": median_ms(tick_refresh, runs),
        "z chart increment (extendData)": median_ms(z_increment, runs) - median_ms(tick_refresh, runs),
        "z chart full render, 15 min": median_ms(lambda: full_render("15m"), runs),
        "z chart full render, whole history": median_ms(
            lambda: full_render("24h" if history_s > 21_600 else "1h"), max(3, runs // 5)
        ),
        "stats card (current z, mean, std)": median_ms(market.latest, runs),
    }
    results["full render JSON, whole history, KiB"] = full_render("24h" if history_s > 21_600 else "1h") / 1024
    results["store MiB"] = market.store.nbytes() / 2**20
    return results


def main():
    for label, seconds in (("1 h", 3_600), ("24 h", 86_400)):
        print(f"history {label}:")
        for name, value in bench(seconds).items():
            unit = name.rsplit(" ", 1)[-1] if name.endswith(("MiB", "KiB")) else "ms"
            print(f"  {name:48s} {value:8.2f} {unit}")


if __name__ == "__main__":
    main()
