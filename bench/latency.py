"""Tick to screen: from the moment the exchange starts quoting a price to the moment an open page
shows it, in a real headless browser.

    python bench/latency.py [--seconds 20] [--loads 6] [--tabs 1] [--gunicorn]

The loopback fake Binance of the tests quotes a new price every UTC second (`FakeBinance.price`),
so each price has a known first moment: the start of its second. A MutationObserver in the page
stamps (Date.now()) every change of the live page's BTCUSDT card; each shown price is matched to
the second it was first quoted. Browser and server share this machine's clock. A tab's interval
keeps the phase of its page load, so the page is loaded several times at random moments and the
changes of every load are pooled. Prints p50, p95 and the worst.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from harness import app_args, fake_exchange, percentile, serving
from pagecost import browser

from components.ids import Live
from loopback import free_port

WATCH = """
const el = document.getElementById(arguments[0]);
window.__seen = [];
new MutationObserver(() => window.__seen.push([Date.now() / 1000, el.textContent]))
    .observe(el, {childList: true, characterData: true, subtree: true});
"""


def first_quoted(fake, price: float, shown_at: float) -> int | None:
    """The second in which the exchange started quoting `price`, looking back from `shown_at`."""
    for second in range(int(shown_at), int(shown_at) - 6, -1):
        if abs(fake.price("BTCUSDT", second) - price) < 0.005 and fake.price("BTCUSDT", second - 1) != price:
            return second
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="watched per page load")
    p.add_argument("--loads", type=int, default=6, help="page loads, each at a random phase")
    p.add_argument("--tabs", type=int, default=1, help="tabs open on the live page (only the first is watched)")
    p.add_argument("--gunicorn", action="store_true")
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="latency-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with fake_exchange() as fake:
        command, env = app_args(port, data, fake.url, gunicorn=args.gunicorn)
        with serving(command, f"{base}/api/health", data / "app.log", env):
            driver = browser()
            seen = []
            try:
                for _ in range(args.loads):
                    time.sleep(random.random())
                    driver.get(base + "/live")
                    for _ in range(args.tabs - 1):
                        driver.execute_script("window.open(arguments[0], '_blank');", base + "/live")
                    driver.switch_to.window(driver.window_handles[0])
                    time.sleep(4)
                    driver.execute_script(WATCH, Live.CARD_PRICE[0])
                    time.sleep(args.seconds)
                    seen += driver.execute_script("return window.__seen")
                    for handle in driver.window_handles[1:]:
                        driver.switch_to.window(handle)
                        driver.close()
                    driver.switch_to.window(driver.window_handles[0])
            finally:
                driver.quit()
    delays = []
    for shown_at, text in seen:
        try:
            price = float(text.replace(",", "").split()[0])
        except (ValueError, IndexError):
            continue
        second = first_quoted(fake, price, shown_at)
        if second is not None:
            delays.append(shown_at - second)
    server = "gunicorn -k gthread" if args.gunicorn else "the dev server"
    print(
        f"tick to screen, {len(delays)} price changes in {args.loads} page loads of {args.seconds:.0f} s, 1 s poll, "
        f"1 s interval, {args.tabs} tab(s), {server}"
    )
    print(f"  p50 {percentile(delays, 50):.3f} s, p95 {percentile(delays, 95):.3f} s, worst {max(delays):.3f} s")


if __name__ == "__main__":
    main()
