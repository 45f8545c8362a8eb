"""A flood of big exports neither eats the app's memory nor starves /api/health (before: 500
day-long CSVs, 20 at a time, took RSS from 252 to 994 MiB for good and health to 19.6 s)."""

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from loopback import free_port
from sim_history import fill_history

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.slow
def test_day_long_csv_exports_stream_queue_and_give_their_memory_back():
    data = Path(tempfile.mkdtemp(prefix="flood-"))
    fill_history(data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = subprocess.Popen(
        [sys.executable, "app.py", "--source", "sim", "--port", str(port), "--data-dir", str(data)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                requests.get(f"{base}/api/health", timeout=5)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "the app did not start"
                time.sleep(0.2)
        first = requests.get(f"{base}/api/analytics.csv?seconds={DAY}", timeout=60)
        assert first.status_code == 200 and first.text.count("\n") == DAY + 1
        assert first.text.splitlines()[-2].split(",")[1] != "", "a day of real prices, not empty rows"
        start = rss_mib(app.pid)
        statuses, health, done = [], [], threading.Event()

        def export():
            for _ in range(4):
                statuses.append(requests.get(f"{base}/api/analytics.csv?seconds={DAY}", timeout=120).status_code)

        def watch():
            while not done.is_set():
                t0 = time.perf_counter()
                requests.get(f"{base}/api/health", timeout=60)
                health.append(time.perf_counter() - t0)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        clients = [threading.Thread(target=export) for _ in range(10)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        done.set()
        watcher.join()
        end = rss_mib(app.pid)
    finally:
        app.terminate()
        app.wait(timeout=15)
    assert statuses == [200] * 40, "every export is answered: they queue for a slot"
    assert end <= 1.5 * start, f"RSS {start:.0f} -> {end:.0f} MiB"
    assert max(health) < 3.0 and sorted(health)[len(health) // 2] < 0.5, f"health max {max(health):.2f} s"
