"""Soak: the app for N minutes at 1 s polling with K simulated browser tabs.

    python bench/soak.py [--minutes 10] [--clients 4]

Starts the loopback fake Binance of the tests (recorded-data prices) with a webhook receiver,
runs `python app.py` against it in its own process (so its memory is its own), and has K client
threads do what an open tab of /analytics does every second: its one tick callback (refresh,
status, toasts, cards and chart updates, with the tab's cursor), and an analytics read. Alert
rules are set tight (|z| ≥ 1 over 30 s, plus a spread rule) so alerts keep firing. Prints RSS
at the start and the end, upstream requests and calls per second, alerts fired and webhooks
received, and client latency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from harness import TICKER, app_args, fake_exchange, rss_mib, serving
from werkzeug import Response

from dash_client import Tab
from loopback import free_port
from services.db import Database
from services.settings import SettingsStore, validate


def client(base: str, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    session = requests.Session()

    def post(body):
        r = session.post(f"{base}/_dash-update-component", json=body, timeout=10)
        return r.status_code, r.json() if r.status_code == 200 else None

    tab = Tab(post, "/analytics")
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            try:
                tab.tick()
            except RuntimeError as exc:
                errors.append(str(exc))
            r = session.get(f"{base}/api/analytics.csv?seconds=300", timeout=10)
            if r.status_code != 200:
                errors.append(f"analytics HTTP {r.status_code}")
        except requests.RequestException as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.perf_counter() - t0)
        stop.wait(max(0.0, 1.0 - (time.perf_counter() - t0)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    with fake_exchange() as fake:
        soak(fake, args)


def soak(fake, args) -> None:
    server = fake.server
    hooks = []
    server.expect_request("/hook", method="POST").respond_with_handler(
        lambda r: (hooks.append(time.time()), Response("ok"))[1]
    )
    data = Path(tempfile.mkdtemp(prefix="soak-"))
    SettingsStore(Database(data)).save(
        validate(
            {
                "symbol_a": "BTCUSDT",
                "symbol_b": "ETHUSDT",
                "threshold": 1.0,
                "window": 30,
                "poll_interval_s": 1,
                "webhook_url": server.url_for("/hook"),
                "rules": [{"kind": "abs_z", "cooldown_s": 5}, {"kind": "z_above", "hysteresis": 0.5}],
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command, env = app_args(port, data, fake.url)
    with serving(command, f"{base}/api/health", data / "app.log", env) as app:
        stop = threading.Event()
        latencies: list[float] = []
        errors: list[str] = []
        threads = [threading.Thread(target=client, args=(base, stop, latencies, errors)) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(10)  # warm: every client running, first history backfilled
        rss_start, calls_start, t_start = rss_mib(app.pid), fake.count(TICKER), time.time()
        alerts_start = Database(data).query("SELECT count(*) FROM alerts")[0][0]
        rss_samples = [rss_start]
        end = t_start + args.minutes * 60
        while time.time() < end:
            time.sleep(min(30.0, max(0.0, end - time.time())))
            rss_samples.append(rss_mib(app.pid))
            print(f"  {time.time() - t_start:6.0f} s  RSS {rss_samples[-1]:.1f} MiB", flush=True)
        elapsed = time.time() - t_start
        calls = fake.count(TICKER) - calls_start
        alerts = Database(data).query("SELECT count(*) FROM alerts")[0][0] - alerts_start
        rss_end = rss_mib(app.pid)
        stop.set()
        for t in threads:
            t.join()
    print(f"soak: {elapsed / 60:.1f} min, {args.clients} clients, 1 s polling, fake Binance on loopback")
    print(f"  app RSS: start {rss_start:.1f} MiB, end {rss_end:.1f} MiB, max {max(rss_samples):.1f} MiB")
    print(
        f"  upstream ticker/price: {calls} calls = {calls / elapsed:.3f}/s; klines (backfill) "
        f"{fake.count('/api/v3/klines')} in all"
    )
    print(f"  alerts fired: {alerts}; webhooks received: {sum(1 for t in hooks if t >= t_start)}")
    print(
        f"  client round (tick callback + analytics.csv): median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.0f} ms; errors: {len(errors)} {sorted(set(errors))[:5]}"
    )
    print(f"  database: {(data / 'dashboard.sqlite3').stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
