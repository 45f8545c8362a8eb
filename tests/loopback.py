"""Loopback helpers shared by the tests and the benchmarks: free ports, and the app in its own
process (so that its memory, its start-up and its exit are its own)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float = 15.0, message: str = "condition", step: float = 0.1):
    """`predicate()`'s first truthy value, asked every `step` s; AssertionError after `timeout` s."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {message}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim_app(data_dir: Path, port: int, quiet: bool = False) -> subprocess.Popen:
    """`python app.py --source sim` on `port`, its output (text) on the process's stdout, or
    dropped when `quiet` (a long run whose log nobody reads must not fill the pipe)."""
    return subprocess.Popen(
        [sys.executable, "app.py", "--source", "sim", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_serving(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    """Until /api/health answers (any status); AssertionError if the process exits or it takes too long."""
    deadline = time.time() + timeout
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            return
        except requests.ConnectionError:
            assert proc.poll() is None, f"the app exited with {proc.returncode}"
            assert time.time() < deadline, "the app did not start"
            time.sleep(0.2)
