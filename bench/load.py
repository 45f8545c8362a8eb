"""Many viewers: K simulated tabs against the production server, each doing what a real tab does.

    python bench/load.py [--tabs 1,10,25,50] [--seconds 30] [--page /analytics] [--workers 1]

Runs gunicorn with deploy/gunicorn.conf.py (`-k gthread`) against the loopback fake Binance of
the tests. Each simulated tab posts its one tick callback a second, at its own phase (as
dcc.Interval does), carrying what a real tab carries from tick to tick — alerts seen, the chart
cursor, the page's view (`tests/dash_client.Tab`) — so the server does exactly the work a
browser tab causes (tails after the first whole figures, shared across tabs). For each K it
prints the callback latency (p50, p95), the app's CPU per tab and in all, the upstream ticker
calls per second, how many answers showed stale data, and from /metrics the analysis restarts
and the late ticks in that step (with several workers, the ones that lose an interval's poll slot
ingest the winner's ticks, some after their second has closed).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

import requests
from harness import TICKER, app_args, cpu_seconds, fake_exchange, percentile, serving

from components import ids
from dash_client import Tab
from loopback import free_port


def tab_loop(base: str, page: str, stop: threading.Event, out: dict) -> None:
    session = requests.Session()

    def post(body):
        r = session.post(f"{base}/_dash-update-component", json=body, timeout=30)
        return r.status_code, r.json() if r.status_code == 200 else None

    tab = Tab(post, page)
    next_tick = time.time() + random.random()
    while not stop.wait(max(0.0, next_tick - time.time())):
        next_tick += 1.0
        t0 = time.perf_counter()
        try:
            response = tab.tick()
        except (RuntimeError, requests.RequestException) as exc:
            out["errors"].append(type(exc).__name__)
            continue
        out["latency"].append(time.perf_counter() - t0)
        out["stale"] += response[ids.AGE_BADGE]["color"] != "success"


def counters(base: str) -> dict[str, float]:
    """Restarts and late ticks so far, summed over every worker."""
    wanted = ("pairmonitor_analysis_recomputes_total", "pairmonitor_ticks_late_total")
    text = requests.get(f"{base}/metrics", timeout=10).text
    return {
        name: sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)) for name in wanted
    }


def run(base: str, fake, pid: int, page: str, tabs: int, seconds: float) -> dict:
    stop = threading.Event()
    out = {"latency": [], "errors": [], "stale": 0}
    threads = [threading.Thread(target=tab_loop, args=(base, page, stop, out)) for _ in range(tabs)]
    for t in threads:
        t.start()
    time.sleep(5)  # every tab has its first whole figures
    out["latency"].clear()
    out["stale"] = 0
    before = counters(base)
    cpu0, calls0, t0 = cpu_seconds(pid), fake.count(TICKER), time.time()
    time.sleep(seconds)
    cpu1, calls1, t1 = cpu_seconds(pid), fake.count(TICKER), time.time()
    after = counters(base)
    stop.set()
    for t in threads:
        t.join()
    cores = (cpu1 - cpu0) / (t1 - t0)
    return {
        "tabs": tabs,
        "p50_ms": percentile(out["latency"], 50) * 1000,
        "p95_ms": percentile(out["latency"], 95) * 1000,
        "cores": cores,
        "cores_per_tab": cores / tabs,
        "upstream_per_s": (calls1 - calls0) / (t1 - t0),
        "answers": len(out["latency"]),
        "stale": out["stale"],
        "errors": len(out["errors"]),
        "restarts": after["pairmonitor_analysis_recomputes_total"] - before["pairmonitor_analysis_recomputes_total"],
        "late": after["pairmonitor_ticks_late_total"] - before["pairmonitor_ticks_late_total"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tabs", default="1,10,25,50")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--page", default="/analytics")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="load-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with fake_exchange() as fake:
        command, env = app_args(port, data, fake.url, gunicorn=True)
        env["WEB_CONCURRENCY"] = str(args.workers)
        with serving(command, f"{base}/api/health", data / "app.log", env) as proc:
            time.sleep(3)  # first polls and the backfill
            print(f"gunicorn -k gthread, {args.workers} worker(s), page {args.page}, {args.seconds:.0f} s per step")
            print(
                f"{'tabs':>5} {'p50 ms':>8} {'p95 ms':>8} {'cores':>7} {'cores/tab':>10} {'upstream/s':>11}"
                f" {'answers':>8} {'stale':>6} {'errors':>7} {'restarts':>9} {'late ticks':>11}"
            )
            for tabs in (int(k) for k in args.tabs.split(",")):
                r = run(base, fake, proc.pid, args.page, tabs, args.seconds)
                print(
                    f"{r['tabs']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['cores']:>7.3f} "
                    f"{r['cores_per_tab']:>10.4f} {r['upstream_per_s']:>11.3f} {r['answers']:>8} {r['stale']:>6} "
                    f"{r['errors']:>7} {r['restarts']:>9.0f} {r['late']:>11.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
