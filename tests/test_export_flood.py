"""A flood of big exports neither eats the app's memory nor starves /api/health (before: 500
day-long CSVs, 20 at a time, took RSS from 252 to 994 MiB for good and health to 19.6 s)."""

import pytest
import requests

from flood import flood
from sim_history import a_day_of_sim

DAY = 86_400


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.slow
def test_day_long_csv_exports_stream_queue_and_give_their_memory_back():
    with a_day_of_sim("flood-") as (port, app):
        base = f"http://127.0.0.1:{port}"
        first = requests.get(f"{base}/api/analytics.csv?seconds={DAY}", timeout=60)
        assert first.status_code == 200 and first.text.count("\n") == DAY + 1
        assert first.text.splitlines()[-2].split(",")[1] != "", "a day of real prices, not empty rows"
        start = rss_mib(app.pid)
        result = flood(base, 24, 8, DAY)
        end = rss_mib(app.pid)
    health = sorted(result["health_s"])
    assert result["statuses"] == {200: 24}, "every export is answered: they queue for a slot"
    assert end <= 1.5 * start, f"RSS {start:.0f} -> {end:.0f} MiB"
    assert health[-1] < 3.0 and health[len(health) // 2] < 0.5, f"health max {health[-1]:.2f} s"
