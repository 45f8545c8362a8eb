"""The scanner's cost, and what it does to the live pages while it runs.

    python bench/scan.py [--top 20] [--tf 1m] [--lookback 500] [--tabs 4]

The app (the dev server) polls the loopback fake Binance of the tests, which lists `--top`
USDT symbols with klines. K simulated tabs tick on /live (bench/load.py's tab loop) while
`GET /api/scan` runs a scan of the top N symbols by 24 h volume (N·(N−1)/2 pairs) in a process
of its own. Prints how long the scan took, its request weight, and the tabs' callback latency
(p50, p95) and the web process's CPU before and during the scan.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from harness import app_args, cpu_seconds, fake_exchange, percentile, serving
from load import tab_loop

from loopback import free_port


def window(pid: int, out: dict, seconds: float | None = None, until: threading.Event | None = None) -> dict:
    """Latency and the web process's own CPU (not the scan's child) over a stretch of ticking."""
    out["latency"].clear()
    cpu0, t0 = _own_cpu(pid), time.time()
    if until is None:
        time.sleep(seconds)
    else:
        until.wait()
    elapsed = time.time() - t0
    return {
        "p50_ms": percentile(out["latency"], 50) * 1000,
        "p95_ms": percentile(out["latency"], 95) * 1000,
        "cores": (_own_cpu(pid) - cpu0) / elapsed,
        "seconds": elapsed,
    }


def _own_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--tf", default="1m")
    p.add_argument("--lookback", type=int, default=500)
    p.add_argument("--tabs", type=int, default=4)
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="scan-"))
    with fake_exchange() as fake:
        fake.add_scan_universe(walkers=max(0, args.top - 4))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command, env = app_args(port, data, fake.url)
        with serving(command, f"{base}/api/health", data / "app.log", env) as proc:
            stop = threading.Event()
            out = {"latency": [], "errors": [], "stale": 0}
            tabs = [threading.Thread(target=tab_loop, args=(base, "/live", stop, out)) for _ in range(args.tabs)]
            for t in tabs:
                t.start()
            time.sleep(8)
            before = window(proc.pid, out, seconds=15)
            done, result = threading.Event(), {}

            def scan() -> None:
                url = f"{base}/api/scan?quote=USDT&top={args.top}&tf={args.tf}&lookback={args.lookback}&format=json"
                started = time.time()
                while (resp := requests.get(url, timeout=60)).status_code == 202:
                    time.sleep(1)
                result.update(resp.json(), status=resp.status_code, wall_s=time.time() - started)
                done.set()

            scan_cpu0 = cpu_seconds(proc.pid)
            threading.Thread(target=scan).start()
            during = window(proc.pid, out, until=done)
            scan_cpu = cpu_seconds(proc.pid) - scan_cpu0 - during["cores"] * during["seconds"]
            stop.set()
            for t in tabs:
                t.join()
    n = len(result.get("symbols", []))
    print(
        f"scan of {n} symbols ({n * (n - 1) // 2} pairs, {args.tf} × {args.lookback}): HTTP {result['status']}, "
        f"{result['wall_s']:.1f} s wall, {result.get('elapsed_s', float('nan')):.1f} s in the scan, "
        f"about {scan_cpu:.1f} CPU-s in its process, request weight {result.get('weight')}"
    )
    print(f"{args.tabs} tabs on /live   {'p50 ms':>8} {'p95 ms':>8} {'web cores':>10}")
    for name, row in (("before the scan", before), ("during the scan", during)):
        print(f"{name:>18} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['cores']:>10.3f}")
    if out["errors"]:
        print(f"errors: {len(out['errors'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
