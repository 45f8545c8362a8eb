"""Bounded work: what one request for a new parameter set costs, with a day of 1 s history, and
whether /api/health stays fresh while the saved analysis switches to robust.

    python bench/budget.py

Runs `python app.py --source sim` in its own process on a database holding a day of 1 s history.
Prints the time of `/api/analytics.csv?seconds=60` for each hedge method with a new window each
time (so nothing is reused), of three robust ones at once, the answer to a day of robust 1 s bars,
and /api/health's age and latency around saving hedge=robust, window=297 (`PATCH /api/settings`).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from harness import percentile, serving

from loopback import free_port
from sim_history import fill_history


def timed(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    status = requests.get(url, timeout=300).status_code
    return time.perf_counter() - t0, status


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="budget-"))
    fill_history(data)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "app.py", "--source", "sim", "--port", str(port), "--data-dir", str(data)]
    with serving(command, f"{base}/health", data / "app.log"):
        requests.get(f"{base}/analytics.csv?seconds=60", timeout=60)
        print("one request, a new parameter set each (seconds=60, 1 s bars, a day of history):")
        for hedge in ("none", "rolling-ols", "robust", "ols", "kalman"):
            took, status = timed(f"{base}/analytics.csv?seconds=60&hedge={hedge}&window=297")
            print(f"  {hedge:>12}: {took * 1e3:7.0f} ms (HTTP {status})")
        results = []
        threads = [
            threading.Thread(
                target=lambda w=w: results.append(timed(f"{base}/analytics.csv?seconds=60&hedge=robust&window={w}"))
            )
            for w in (290, 291, 292)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"  3 robust at once: slowest {max(r[0] for r in results) * 1e3:.0f} ms")
        took, status = timed(f"{base}/analytics.csv?seconds=86400&hedge=robust&window=297")
        print(f"  a day of robust 1 s bars: HTTP {status} in {took * 1e3:.0f} ms")
        ages, latencies, stop = [], [], threading.Event()

        def watch():
            while not stop.is_set():
                t0 = time.perf_counter()
                ages.append(requests.get(f"{base}/health", timeout=60).json()["age_s"])
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(2)
        took = time.perf_counter()
        requests.patch(f"{base}/settings", json={"hedge": "robust", "window": 297}, timeout=60)
        took = time.perf_counter() - took
        time.sleep(10)
        stop.set()
        watcher.join()
        print(f"saving hedge=robust, window=297: {took * 1e3:.0f} ms; over the next 10 s /api/health age max")
        print(
            f"  {max(ages):.2f} s, latency p50 {percentile(latencies, 50) * 1e3:.0f} ms, "
            f"max {max(latencies) * 1e3:.0f} ms ({len(ages)} reads)"
        )


if __name__ == "__main__":
    main()
