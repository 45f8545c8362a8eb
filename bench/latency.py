"""Tick to screen: from the moment the exchange starts quoting a price (REST) or makes a trade
(the stream) to the moment an open page shows it, in a real headless browser.

    python bench/latency.py [--seconds 20] [--loads 6] [--tabs 1] [--gunicorn] [--stream]

A MutationObserver in the page stamps (Date.now()) every change of the live page's BTCUSDT card.
REST: the loopback fake Binance of the tests quotes a new price every UTC second
(`FakeBinance.price`), so each price has a known first moment, the start of its second; each shown
price is matched to the second it was first quoted. --stream: the app reads the fake's market
stream (10 trades a second per symbol), and the card names the trade time `T` of the price it
shows ("last tick ..."), so each change is matched to its trade. Browser and server share this
machine's clock. A tab's interval keeps the phase of its page load, so the page is loaded several
times at random moments and the changes of every load are pooled. Prints p50, p95 and the worst.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path

from harness import app_args, fake_exchange, fake_stream, percentile, serving
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


def delay(fake, streamed: bool, shown_at: float, text: str) -> float | None:
    """Seconds from the trade (stream: the card's "last tick" time) or the first quote (REST: the
    price's second) to `shown_at`; None for a text that names neither."""
    try:
        if streamed:
            return shown_at - datetime.fromisoformat(text.rsplit("last tick ", 1)[1].replace("Z", "+00:00")).timestamp()
        price = float(text.replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None
    second = first_quoted(fake, price, shown_at)
    return None if second is None else shown_at - second


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="watched per page load")
    p.add_argument("--loads", type=int, default=6, help="page loads, each at a random phase")
    p.add_argument("--tabs", type=int, default=1, help="tabs open on the live page (only the first is watched)")
    p.add_argument("--gunicorn", action="store_true")
    p.add_argument("--stream", action="store_true", help="the app reads the fake's market stream")
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="latency-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    watched = (Live.CARD_SUB if args.stream else Live.CARD_PRICE)[0]
    with fake_exchange() as fake, fake_stream(fake) if args.stream else contextlib.nullcontext() as stream:
        command, env = app_args(port, data, fake.url, gunicorn=args.gunicorn, stream_url=stream and stream.url)
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
                    driver.execute_script(WATCH, watched)
                    time.sleep(args.seconds)
                    seen += driver.execute_script("return window.__seen")
                    for handle in driver.window_handles[1:]:
                        driver.switch_to.window(handle)
                        driver.close()
                    driver.switch_to.window(driver.window_handles[0])
            finally:
                driver.quit()
    delays = [d for shown_at, text in seen if (d := delay(fake, args.stream, shown_at, text)) is not None]
    server = "gunicorn -k gthread" if args.gunicorn else "the dev server"
    how = "the stream, pushed" if args.stream else "1 s poll, 1 s interval"
    print(
        f"tick to screen, {len(delays)} price changes in {args.loads} page loads of {args.seconds:.0f} s, {how}, "
        f"{args.tabs} tab(s), {server}"
    )
    print(f"  p50 {percentile(delays, 50):.3f} s, p95 {percentile(delays, 95):.3f} s, worst {max(delays):.3f} s")


if __name__ == "__main__":
    main()
