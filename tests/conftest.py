import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chromium import OFFLINE_FLAGS
from fake_binance import FakeBinance
from fake_stream import FakeStream, TradeTape
from loopback import PostgresServer, RedisServer


@pytest.fixture
def fake_binance(httpserver):
    return FakeBinance(httpserver)


@pytest.fixture
def tape(fake_binance):
    """The exchange's trades, which the fake's REST answers read and the fake stream streams."""
    fake_binance.tape = tape = TradeTape(fake_binance.price)
    yield tape
    tape.close()


@pytest.fixture
def fake_stream(tape):
    server = FakeStream(tape)
    yield server
    server.close()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on 127.0.0.1 (a missing one fails the test: .ci/run installs it)."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL on 127.0.0.1 that the session's tests share, each in a database of its own
    (a missing one fails the test: .ci/run installs it)."""
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the session's PostgreSQL."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """Each engine in turn: "" (the SQLite file under the data dir), then a new PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""


class FakeClock:
    """A settable clock: `clock()` returns `now`."""

    def __init__(self, now: float):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock(1_761_091_200.25)  # 2025-10-22T00:00:00.25Z, the recorded day


def pytest_setup_options():
    """Chromium flags for a machine with no internet: no background calls to Google's hosts."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in (*OFFLINE_FLAGS, "--window-size=1400,1000"):  # a desktop: the navbar's links in view
        options.add_argument(flag)
    return options
