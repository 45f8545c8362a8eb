"""Upstream ticker calls per second from several hosts, each on its own data dir, with and without
one Redis between them (--cache-url).

    python bench/hosts.py [--hosts 2] [--workers 2] [--tabs 3] [--seconds 20]

Each host is `gunicorn -c deploy/gunicorn.conf.py app:server` with WEB_CONCURRENCY workers, against
the loopback fake Binance of the tests; `--tabs` clients per host ask /api/health every 0.2 s on a
new connection each time (so every worker serves them). Needs Debian's redis-server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from harness import TICKER, app_args, fake_exchange, serving

from loopback import RedisServer, free_port


def calls_per_second(hosts: int, workers: int, tabs: int, seconds: float, cache_url: str) -> tuple[float, float]:
    """(ticker calls per second, share of answers that were live) for `hosts` hosts."""
    data = Path(tempfile.mkdtemp(prefix="hosts-"))
    with fake_exchange() as fake, contextlib.ExitStack() as stack:
        urls = []
        for i in range(hosts):
            port = free_port()
            command, env = app_args(port, data / f"host-{i}", fake.url, gunicorn=True)
            env.update({"WEB_CONCURRENCY": str(workers), "CACHE_URL": cache_url})
            url = f"http://127.0.0.1:{port}/api/health"
            stack.enter_context(serving(command, url, data / f"host-{i}.log", env))
            urls.append(url)
        time.sleep(3)
        states, stop = [], time.time() + seconds

        def tab(url):
            while time.time() < stop:
                with contextlib.suppress(requests.RequestException):
                    states.append(requests.get(url, timeout=5).json()["status"])
                time.sleep(0.2)

        start, before = time.time(), fake.count(TICKER)
        threads = [threading.Thread(target=tab, args=(url,)) for url in urls for _ in range(tabs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = (fake.count(TICKER) - before) / (time.time() - start)
        return rate, states.count("ok") / max(len(states), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tabs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="hosts-redis-")))
    try:
        rows = [
            ("each host's own file cache", calls_per_second(args.hosts, args.workers, args.tabs, args.seconds, "")),
            ("one Redis (--cache-url)", calls_per_second(args.hosts, args.workers, args.tabs, args.seconds, redis.url)),
        ]
    finally:
        redis.stop()
    head = f"{args.hosts} hosts × gunicorn -w {args.workers}, {args.tabs} clients each, {args.seconds:.0f} s"
    print(f"{head}, poll at 1 s")
    print(f"{'shared state':>28} {'ticker calls/s':>15} {'answers live':>13}")
    for name, (rate, live) in rows:
        print(f"{name:>28} {rate:>15.2f} {live:>12.0%}")


if __name__ == "__main__":
    sys.exit(main())
