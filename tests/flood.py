"""A flood of big exports with /api/health watched: shared by the flood test and bench/exports.py."""

import threading
import time
from collections import Counter

import requests


def flood(base: str, total: int, concurrency: int, seconds: int) -> dict:
    """Fetch `total` `/api/analytics.csv?seconds=...`, `concurrency` at a time, reading
    /api/health every 0.2 s meanwhile. Returns the statuses, the biggest answer's bytes, the
    elapsed time and health's latencies."""
    statuses, health, sizes = Counter(), [], []
    left = iter(range(total))
    lock, done = threading.Lock(), threading.Event()

    def exporter():
        with requests.Session() as s:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                r = s.get(f"{base}/api/analytics.csv?seconds={seconds}", timeout=120)
                with lock:
                    statuses[r.status_code] += 1
                    sizes.append(len(r.content))

    def watcher():
        with requests.Session() as s:
            while not done.is_set():
                t0 = time.perf_counter()
                s.get(f"{base}/api/health", timeout=60)
                health.append(time.perf_counter() - t0)
                time.sleep(0.2)

    watch = threading.Thread(target=watcher)
    watch.start()
    workers = [threading.Thread(target=exporter) for _ in range(concurrency)]
    t0 = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    watch.join()
    return {"elapsed_s": time.time() - t0, "statuses": dict(statuses), "bytes": max(sizes), "health_s": health}
