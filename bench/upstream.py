"""Upstream ticker/price calls per second with 1 and with 4 browser tabs open.

    python bench/upstream.py [seconds-per-phase]

Runs the app against the loopback fake Binance of the tests (recorded-data prices), opens real
headless Chromium tabs on the three pages, and counts the requests the fake exchange receives.
Needs Debian's chromium and chromium-driver (as the browser tests do).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pytest_httpserver import HTTPServer
from selenium import webdriver
from werkzeug.serving import make_server

from app import create_app
from fake_binance import FakeBinance
from services.settings import AppConfig

TICKER = "/api/v3/ticker/price"


def count(fake, seconds):
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    calls = sum(1 for t in fake.times[TICKER] if start <= t < end)
    return calls, end - start


def main(seconds: float = 20.0):
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    exchange = HTTPServer(host="127.0.0.1", port=0)
    exchange.start()
    fake = FakeBinance(exchange)
    app = create_app(AppConfig(source="binance", binance_url=fake.url, data_dir=tempfile.mkdtemp()))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-renderer-backgrounding",
        "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(url + "/analytics")
        time.sleep(5)
        calls, span = count(fake, seconds)
        print(f"1 tab : {calls} ticker/price calls in {span:.1f} s = {calls / span:.2f} per second")
        for path in ("/", "/live", "/settings", "/analytics"):
            driver.execute_script("window.open(arguments[0], '_blank');", url + path)
        time.sleep(5)
        calls, span = count(fake, seconds)
        tabs = len(driver.window_handles)
        print(f"{tabs} tabs: {calls} ticker/price calls in {span:.1f} s = {calls / span:.2f} per second")
        print(f"klines (backfill) calls in all: {fake.count('/api/v3/klines')}")
    finally:
        driver.quit()
        server.shutdown()
        exchange.stop()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
