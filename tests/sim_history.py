"""A database with a day of the simulation's 1 s history, as an app that ran all day leaves it."""

import contextlib
import tempfile
import time
from pathlib import Path

from loopback import free_port, start_sim_app, wait_until_serving
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


@contextlib.contextmanager
def a_day_of_sim(prefix: str):
    """`python app.py --source sim` on a free port, over a data dir holding a day of history:
    yields (port, process), stopped after."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    fill_history(data)
    port = free_port()
    app = start_sim_app(data, port, quiet=True)
    try:
        wait_until_serving(app, port)
        yield port, app
    finally:
        app.terminate()
        app.communicate(timeout=15)
