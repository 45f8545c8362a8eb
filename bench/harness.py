"""What the benchmarks share: the loopback fake exchange, the app (or any server) in its own
process, its CPU time and memory read from /proc, and percentiles.

Everything talks to 127.0.0.1 only; every process started here is stopped on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pytest_httpserver import HTTPServer

from fake_binance import FakeBinance
from fake_stream import SYMBOLS, FakeStream, TradeTape

TICKER = "/api/v3/ticker/price"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fake_exchange():
    """The tests' Binance-shaped server (recorded-data prices) on a loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its request log
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield FakeBinance(server)
    finally:
        server.stop()


@contextlib.contextmanager
def fake_stream(fake: FakeBinance, symbols=SYMBOLS):
    """The tests' market-stream server, streaming a trade tape of `symbols` (10 trades a second
    each) that `fake`'s REST answers read."""
    fake.tape = tape = TradeTape(fake.price, symbols)
    stream = FakeStream(tape)
    try:
        yield stream
    finally:
        stream.close()
        tape.close()


def wait_http(url: str, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s" + (f"; see {log}" if log else ""))


@contextlib.contextmanager
def serving(args: list[str], health_url: str, log: Path, env: dict | None = None):
    """A server process (`args`, run from the project root) answering `health_url`; stopped after."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            wait_http(health_url, log=log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def app_args(
    port: int, data_dir: Path, exchange_url: str, gunicorn: bool = False, stream_url: str | None = None
) -> tuple[list[str], dict]:
    """The command and environment that run the app against `exchange_url` (and its market
    stream at `stream_url`, if given): the dev server, or gunicorn with the deploy/ config (gthread)."""
    source = "binance" if stream_url is None else "stream"
    if gunicorn:
        env = {
            "SOURCE": source,
            **({"BINANCE_STREAM_URL": stream_url} if stream_url else {}),
            "BINANCE_BASE_URL": exchange_url,
            "DATA_DIR": str(data_dir),
            "PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(data_dir / "metrics"),
        }
        return [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:server"], env
    return [
        sys.executable,
        "app.py",
        "--source",
        source,
        *(["--stream-url", stream_url] if stream_url else []),
        "--binance-url",
        exchange_url,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ], {}


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (gunicorn's workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
