"""GET /metrics: Prometheus text that counts what the README says it counts."""

import numpy as np
from cachelib import SimpleCache
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from dash_client import Tab
from scripted import ScriptedSource
from services.market import MarketService
from services.settings import AppConfig
from services.sources import Tick, utc_from_epoch

NAMES = [
    "pairmonitor_upstream_requests_total",
    "pairmonitor_analysis_recomputes_total",
    "pairmonitor_ticks_late_total",
    "pairmonitor_ticks_ingested_total",
    "pairmonitor_callback_seconds",
    "pairmonitor_poll_seconds",
    "pairmonitor_alerts_total",
    "pairmonitor_webhook_deliveries_total",
    "pairmonitor_refresh_errors_total",
]


def scrape(client) -> dict:
    """{(name, labels...): value} from /metrics."""
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_count_upstream_requests_ticks_callbacks_and_alerts(fake_binance, tmp_path):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path)))
    client = app.server.test_client()
    before = scrape(client)
    ticker = ("pairmonitor_upstream_requests_total", ("endpoint", "/api/v3/ticker/price"), ("status", "200"))
    calls_before = fake_binance.count("/api/v3/ticker/price")
    tab = Tab(
        lambda body: (lambda r: (r.status_code, r.get_json()))(client.post("/_dash-update-component", json=body)),
        "/analytics",
    )
    tab.tick()
    client.post("/api/alerts/test")
    after = scrape(client)
    text = client.get("/metrics").get_data(as_text=True)
    assert all(name in text for name in NAMES), [n for n in NAMES if n not in text]
    polls = fake_binance.count("/api/v3/ticker/price") - calls_before
    assert polls >= 1 and after[ticker] - before.get(ticker, 0) == polls, "every ticker call, by endpoint and status"
    klines = ("pairmonitor_upstream_requests_total", ("endpoint", "/api/v3/klines"), ("status", "200"))
    assert after[klines] > before.get(klines, 0), "the backfill's klines"
    count = ("pairmonitor_callback_seconds_count", ("page", "/analytics"))
    assert after[count] == before.get(count, 0) + 1, "one tick callback, one observation"
    alerts = ("pairmonitor_alerts_total", ("kind", "test"))
    assert after[alerts] == before.get(alerts, 0) + 1


def test_late_ticks_for_ten_minutes_never_restart_the_analysis(tmp_path, clock):
    """Ten market minutes in which every poll answers with a tick for the second before (as if
    it landed 1.3 s late) and some seconds get a second, later tick: every late tick is counted,
    the analysis never restarts, and the alerts still see final bars."""
    origin = int(clock()) - 3_600
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(0, 1, 4_300))
    prices = {"AAAUSDT": 1_000 + walk, "BBBUSDT": 500 + 0.5 * walk + rng.normal(0, 0.5, 4_300)}

    class LateSource(ScriptedSource):
        def poll(self, symbols):
            late = self.clock() - 1.3
            return [Tick(s, float(self.prices[s][int(late) - self.origin]), utc_from_epoch(late)) for s in symbols]

    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=LateSource(clock, origin, prices))
    market.save_settings({"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT", "window": 30, "hedge": "kalman"})
    market.tick()
    client = create_app(cfg, market).server.test_client()
    start = scrape(client)
    restarts = ("pairmonitor_analysis_recomputes_total",)
    late = ("pairmonitor_ticks_late_total",)
    for s in range(600):
        clock.advance(1)
        market.tick()
        if s % 7 == 0:  # a straggler for the second before, landing later still
            t = int(clock()) - 2
            market.store.add_ticks([Tick("AAAUSDT", float(prices["AAAUSDT"][t - origin]), utc_from_epoch(t + 0.9))])
    end = scrape(client)
    assert end[restarts] == start[restarts], "no restart in steady state"
    assert end[late] - start[late] >= 1_200, "every live tick was late, and counted"
    engine = market.analyses.engine(market.snapshot().params)
    assert engine.resets == 0 and engine.end >= int(clock()) - 4
