"""A database with a day of the simulation's 1 s history, as an app that ran all day leaves it."""

import time
from pathlib import Path

from services.db import Database
from services.history import History
from services.sources import SimSource

PAIR = ("BTCUSDT", "ETHUSDT")


def fill_history(data_dir: Path, seconds: int = 86_400, span_s: int = 86_400) -> None:
    """Store the last `seconds` of the default simulation (`--source sim`, seed 7, `span_s` of
    history) for the default pair, so that the app starts with all of it."""
    sim = SimSource(span_s=span_s)
    now = int(time.time())
    history = History(Database(data_dir), sim.store_key, span_s)
    for symbol in PAIR:
        history.save(sim.history(symbol, now - seconds, now - 1), [])
