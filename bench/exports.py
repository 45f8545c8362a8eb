"""Export flood: many big CSV exports at once, with the app's memory and /api/health watched.

    python bench/exports.py [--requests 200] [--concurrency 20] [--seconds 86400]

Runs `python app.py --source sim` in its own process on a database holding a day of 1 s history,
then has `--concurrency` clients fetch `/api/analytics.csv?seconds=...` until `--requests` are
done, while another client reads `/api/health` every 0.2 s. Prints the answers by status, the
bytes of one export, the app's RSS before and after (and the ratio), and /api/health's latency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests
from harness import percentile, rss_mib, serving

from flood import flood
from loopback import free_port
from sim_history import fill_history


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--seconds", type=int, default=86_400)
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="exports-"))
    fill_history(data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "app.py", "--source", "sim", "--port", str(port), "--data-dir", str(data)]
    with serving(command, f"{base}/api/health", data / "app.log") as proc:
        requests.get(f"{base}/api/analytics.csv?seconds={args.seconds}", timeout=120)  # warm: the analysis is built
        start = rss_mib(proc.pid)
        result = flood(base, args.requests, args.concurrency, args.seconds)
        end = rss_mib(proc.pid)
    health = result["health_s"]
    print(f"{args.requests} exports of {args.seconds} s, {args.concurrency} at a time: {result['elapsed_s']:.1f} s")
    print(f"  answers by status: {result['statuses']}; one export is {result['bytes'] / 1e6:.1f} MB")
    print(f"  RSS {start:.0f} MiB before, {end:.0f} MiB after: {end / start:.2f}×")
    print(
        f"  /api/health: p50 {percentile(health, 50) * 1e3:.0f} ms, p95 {percentile(health, 95) * 1e3:.0f} ms, "
        f"max {max(health) * 1e3:.0f} ms over {len(health)} reads"
    )


if __name__ == "__main__":
    main()
