"""A page's cost per tab: the app's CPU with K real headless Chromium tabs open on a page,
against a minimal Dash page (one 1 s interval, one callback) measured in the same run.

    python bench/pagecost.py [--tabs 4] [--seconds 40] [--rounds 3] [--gunicorn]
                             [--pages /live,/analytics,/settings,/] [--pairs 20] [--stream] [--marginal]

Each server runs in its own process (the dev server, as `python app.py` runs it, or gunicorn with
deploy/gunicorn.conf.py); the app polls the loopback fake Binance of the tests. For each page it
prints the server's cores in all, per tab, and as a multiple of the minimal page's. With --rounds N
the floor and the pages are measured in turn N times (both servers running throughout) and each
page's median multiple is printed: on a shared machine one 40 s sample of a few hundredths of a
core varies by a fifth from run to run. With --pairs N the app watches N pairs of seven symbols the
fake exchange trades (N ≤ 21). With --stream the app reads the fake's market stream (10 trades a
second per symbol, the live cards pushed as they trade); the app's cost with no tab open (the
stream's ingest) is measured too, and each page's cost above it. With --marginal each server is
also measured with one tab, and the cost of each tab past the first is set against the minimal
page's: what a tab adds, apart from the work done once for all of them (the poll, the ingest, every
pair's analysis and alerts, which grow with --pairs). Needs Debian's chromium and chromium-driver
(as the browser tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import app_args, cpu_seconds, fake_exchange, fake_stream, serving
from selenium import webdriver
from selenium.webdriver.chrome.options import Options

from chromium import OFFLINE_FLAGS
from loopback import free_port

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT")


def browser() -> webdriver.Chrome:
    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", *OFFLINE_FLAGS):
        options.add_argument(flag)
    return webdriver.Chrome(options=options)


def measure(pid: int, url: str, tabs: int, seconds: float) -> float:
    """Cores the server at `pid` spends while `tabs` tabs show `url`."""
    driver = browser()
    try:
        driver.get(url)
        for _ in range(tabs - 1):
            driver.execute_script("window.open(arguments[0], '_blank');", url)
        time.sleep(10)  # loaded, first whole figures drawn, ticking
        cpu0, t0 = cpu_seconds(pid), time.time()
        time.sleep(seconds)
        return (cpu_seconds(pid) - cpu0) / (time.time() - t0)
    finally:
        driver.quit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tabs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--rounds", type=int, default=1, help="measure the floor and each page this many times, in turn")
    p.add_argument("--gunicorn", action="store_true", help="serve the app with gunicorn -k gthread")
    p.add_argument("--pages", default="/live,/analytics,/settings,/", help="comma-separated paths to measure")
    p.add_argument("--pairs", type=int, default=1, help="pairs watched (1 to 21)")
    p.add_argument("--stream", action="store_true", help="the app reads the fake's market stream")
    p.add_argument("--marginal", action="store_true", help="also measure one tab: the cost of each tab past the first")
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="pagecost-"))
    pages = args.pages.split(",")
    floors, costs = [], {page: [] for page in pages}
    singles: dict[str, list[float]] = {page: [] for page in ["", *pages]}  # one tab ("": the floor)
    idle = 0.0
    floor_port = free_port()
    floor_url = f"http://127.0.0.1:{floor_port}/"
    with (
        serving([sys.executable, "bench/minimal_app.py", str(floor_port)], floor_url, data / "minimal.log") as floor,
        fake_exchange() as fake,
        fake_stream(fake, SYMBOLS) if args.stream else contextlib.nullcontext() as stream,
    ):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        fake.trading.update({s: "TRADING" for s in SYMBOLS})
        pairs = ",".join(f"{a}-{b}" for a, b in itertools.combinations(SYMBOLS, 2))
        env = {"PAIRS": ",".join(pairs.split(",")[: args.pairs])}
        command, app_env = app_args(port, data, fake.url, gunicorn=args.gunicorn, stream_url=stream and stream.url)
        with serving(command, f"{base}/api/health", data / "app.log", {**app_env, **env}) as proc:
            time.sleep(3)
            if args.stream:
                cpu0, t0 = cpu_seconds(proc.pid), time.time()
                time.sleep(args.seconds)
                idle = (cpu_seconds(proc.pid) - cpu0) / (time.time() - t0)
            for _ in range(args.rounds):  # the floor and the pages in turn: a noisy minute hits both
                floors.append(measure(floor.pid, floor_url, args.tabs, args.seconds))
                for page in pages:
                    costs[page].append(measure(proc.pid, base + page, args.tabs, args.seconds))
                if args.marginal:
                    singles[""].append(measure(floor.pid, floor_url, 1, args.seconds))
                    for page in pages:
                        singles[page].append(measure(proc.pid, base + page, 1, args.seconds))
    server = "gunicorn -k gthread" if args.gunicorn else "the dev server"
    source = "the stream" if args.stream else "REST at 1 s"
    print(
        f"{args.tabs} headless Chromium tabs per page, {args.seconds:.0f} s each, {server}, {args.pairs} pair(s), "
        f"{source}, {args.rounds} round(s)"
    )
    if args.stream:
        print(f"the app with no tab open: {idle:.3f} cores (the stream's ingest); 'above idle' is the tabs' own cost")
    print(f"{'page':>20} {'cores':>8} {'per tab':>9} {'× floor':>8} {'above idle, × floor':>20}")
    for r, floor_cores in enumerate(floors):
        rows = [("minimal Dash page", floor_cores)] + [(f"app {page}", costs[page][r]) for page in pages]
        for name, cores in rows:
            above = "" if name == "minimal Dash page" or not args.stream else f"{(cores - idle) / floor_cores:>20.1f}"
            print(f"{name:>20} {cores:>8.3f} {cores / args.tabs:>9.4f} {cores / floor_cores:>8.1f} {above}")
    if args.rounds > 1:
        for page in pages:
            ratios = sorted(c / f for c, f in zip(costs[page], floors))
            print(
                f"app {page}: × floor, median of {args.rounds} rounds {statistics.median(ratios):.2f} "
                f"(from {ratios[0]:.2f} to {ratios[-1]:.2f})"
            )

    if args.marginal:
        print(f"each tab past the first ({args.tabs} tabs less 1 tab, per tab), as a multiple of the floor's:")
        floor_extra = [(f - one) / (args.tabs - 1) for f, one in zip(floors, singles[""])]
        for page in pages:
            extra = [(c - one) / (args.tabs - 1) for c, one in zip(costs[page], singles[page])]
            ratios = sorted(e / f for e, f in zip(extra, floor_extra))
            shared = statistics.median(one - e for one, e in zip(singles[page], extra))  # 1 tab less a tab's own
            print(
                f"app {page}: {statistics.median(ratios):.2f} (from {ratios[0]:.2f} to {ratios[-1]:.2f}); "
                f"the work done once for all tabs, about {shared:.3f} cores"
            )


if __name__ == "__main__":
    main()
