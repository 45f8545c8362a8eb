"""A source whose prices the test writes: one array per symbol, one price per second."""

from services.sources import Tick, utc_from_epoch


class ScriptedSource:
    """Prices given per second by arrays starting at `origin`; the clock says which second is now."""

    simulated, kind, label, interval_s, store_key = True, "script", "Scripted", 1, "script"

    def __init__(self, clock, origin, prices):
        self.clock, self.origin, self.prices = clock, origin, prices
        self.now = clock

    def symbols(self):
        return sorted(self.prices)

    def poll(self, symbols):
        s = int(self.clock())
        return [Tick(sym, float(self.prices[sym][s - self.origin]), utc_from_epoch(self.clock())) for sym in symbols]

    def history(self, symbol, start_s, end_s):
        lo = max(start_s, self.origin)
        return [
            Tick(symbol, float(self.prices[symbol][s - self.origin]), utc_from_epoch(s)) for s in range(lo, end_s + 1)
        ]
