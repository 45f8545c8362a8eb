"""Fault injection against the loopback fake exchange, scripted per test.

Each test runs the real service (real clock, real HTTP) with "tabs" refreshing it, injects one
fault, and checks, during and after it: the app still serves every page and its shell,
`/api/health` tells the truth, data resumes within two polls of the fault ending, and every
stored bucket holds the exchange's price for that very second.
"""

import json
import threading
import time

import numpy as np
import pytest
from cachelib import SimpleCache

import services.link as link_module
from app import create_app
from components import ids
from dash_client import tick_payload
from services.binance import BinanceClient
from services.market import MarketService
from services.settings import AppConfig, SettingsError
from services.sources import BinanceSource

TICKER = "/api/v3/ticker/price"
PAGES = ["/", "/live", "/analytics", "/backtest", "/settings"]
PAIR = ("BTCUSDT", "ETHUSDT")


class Rig:
    """A MarketService on the fake exchange, its Dash app, and tabs refreshing it."""

    def __init__(self, fake, tmp_path, offset=None, **config):
        self.fake = fake
        self.offset = offset or [0.0]  # the local clock's error, seconds
        cfg = AppConfig(source="binance", binance_url=fake.url, data_dir=str(tmp_path), history_s=3_600, **config)
        client = BinanceClient(
            fake.url, connect_timeout=0.5, read_timeout=0.5, clock=lambda: time.time() + self.offset[0]
        )
        self.market = MarketService(cfg, SimpleCache(), source=BinanceSource(client))
        self.app = create_app(cfg, self.market)
        self.http = self.app.server.test_client()
        self._stop = threading.Event()
        self._tabs = [threading.Thread(target=self._tab, daemon=True) for _ in range(2)]
        for t in self._tabs:
            t.start()

    def _tab(self):
        while not self._stop.is_set():
            self.market.refresh()
            time.sleep(0.05)

    def close(self):
        self._stop.set()
        for t in self._tabs:
            t.join()

    def health(self):
        resp = self.http.get("/api/health")
        return resp.status_code, resp.get_json()

    def wait(self, predicate, timeout=10.0, what="condition"):
        end = time.time() + timeout
        while time.time() < end:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; health: {self.health()}")

    def live(self):
        status = self.market.snapshot().status.as_dict()
        return all(leg["state"] == "live" and leg["age_s"] < 1.5 for leg in status["legs"].values())

    def polls(self):
        return self.fake.count(TICKER)

    def assert_serves_every_page(self):
        for path in PAGES:
            assert self.http.get(path).status_code == 200, path
        for path in ("/_dash-layout", "/_dash-dependencies"):
            assert self.http.get(path).status_code == 200, path
        with self.app.server.test_request_context():
            import dash

            for page in dash.page_registry.values():
                page["layout"]()  # renders from the service's current state, no exception
        responses = []
        for path in ("/live", "/analytics", "/settings", "/"):
            resp = self.http.post("/_dash-update-component", json=tick_payload(1, path))
            assert resp.status_code == 200, resp.data[:300]
            responses.append(json.loads(resp.data)["response"])
        return responses[0]

    def assert_buckets_are_the_exchanges(self):
        """Every stored second holds the fake exchange's price of that second: none is shifted."""
        now = int(time.time())
        checked = 0
        for sym in PAIR:
            prices = self.market.store.prices(sym, now - 600, now)
            for i in np.flatnonzero(~np.isnan(prices)):
                second = now - 600 + int(i)
                assert prices[i] == self.fake.price(sym, second), f"{sym} bucket {second} mislabelled"
                checked += 1
        assert checked > 100

    def assert_resumes_within_two_polls(self):
        start = self.polls()
        self.wait(self.live, timeout=6, what="data to resume")
        assert self.polls() - start <= 2, f"{self.polls() - start} polls to resume"


@pytest.fixture
def rig(fake_binance, tmp_path):
    rigs = []

    def make(**kw):
        rigs.append(Rig(fake_binance, tmp_path, **kw))
        rigs[-1].wait(rigs[-1].live, what="first data")
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.mark.parametrize(
    "status, msg", [(429, "Too much request weight used"), (418, "Way too much request weight used; IP banned")]
)
def test_rate_limits_mean_zero_requests_inside_the_retry_after_window(rig, fake_binance, status, msg):
    r = rig()
    fake_binance.fail_next(TICKER, status, {"code": -1003, "msg": msg}, headers={"Retry-After": "8"})
    r.wait(lambda: r.market.snapshot().status.rate_limit_resumes_in_s is not None, what=f"the {status}")
    limited_at, before = time.time(), r.polls()
    time.sleep(5.6)  # past the stale threshold (5 s), well inside the window
    assert r.polls() == before, "a request inside the Retry-After window"
    code, health = r.health()
    assert code == 503 and health["status"] == "stale" and 0 < health["rate_limit_resumes_in_s"] < 3
    assert health["last_error"]["status"] == status
    shell = r.assert_serves_every_page()
    assert "Rate-limited" in json.dumps(shell[ids.STATUS_BANNER])
    r.assert_resumes_within_two_polls()
    first_after = fake_binance.times[TICKER][before]
    assert first_after >= limited_at + 7.5, f"a request {first_after - limited_at:.1f} s into an 8 s window"
    assert r.health()[0] == 200
    r.assert_buckets_are_the_exchanges()


def test_451_moves_to_the_next_fallback_host_and_says_so(rig, fake_binance):
    fallback = fake_binance.url.replace("127.0.0.1", "localhost")
    r = rig(fallback_urls=(fallback,))
    fake_binance.fail_next(TICKER, 451, {"code": 0, "msg": "Service unavailable from a restricted location"})
    r.wait(lambda: r.market.snapshot().status.rest_host_note, what="the switch")
    status = r.market.snapshot().status.as_dict()
    assert "451" in status["rest_host_note"] and fallback in status["rest_host_note"]
    assert r.market.source().client.base_url == fallback
    assert r.market.current_settings().binance_url == fallback, "kept for every worker and the next start"
    shell = r.assert_serves_every_page()
    assert "451" in json.dumps(shell[ids.STATUS_BANNER])
    r.assert_resumes_within_two_polls()
    assert r.health()[0] == 200
    r.assert_buckets_are_the_exchanges()


def test_451_on_the_last_host_is_explained_on_health_and_settings(rig, fake_binance):
    r = rig(fallback_urls=())
    fake_binance.fail_next(TICKER, 451, {"code": 0, "msg": "Service unavailable from a restricted location"}, times=100)
    r.wait(lambda: not r.live(), timeout=8, what="the legs to go down")
    r.wait(lambda: r.health()[0] == 503, what="health to fail")
    health = r.health()[1]
    assert health["last_error"]["status"] == 451 and "restricted location" in health["last_error"]["message"]
    assert all(leg["state"] == "disconnected" for leg in health["legs"].values())
    with r.app.server.test_request_context():
        from pages.settings import _host_info

        assert "restricted location" in str(_host_info(r.market, r.market.snapshot().status))
    r.assert_serves_every_page()
    fake_binance._failures[TICKER].clear()
    r.assert_resumes_within_two_polls()


def test_a_burst_of_500s_is_retried_then_reported_then_recovered_with_the_gap_visible(rig, fake_binance):
    r = rig()
    fake_binance.fail_next("/api/v3/klines", 500, {"code": -1000, "msg": "down"}, times=1_000)  # no backfill
    fake_binance.fail_next(TICKER, 500, {"code": -1000, "msg": "An unknown error occurred"}, times=18)
    r.wait(lambda: r.market.snapshot().status.last_error is not None, what="the error")
    first_failure = int(time.time())
    r.assert_serves_every_page()
    r.wait(lambda: not fake_binance._failures[TICKER], what="the burst to end")
    r.assert_resumes_within_two_polls()
    assert r.health()[0] == 200
    time.sleep(1.5)
    now = int(time.time())
    frame = r.market.frame(r.market.snapshot(), first_failure - 2, now - 1)
    assert frame["BTCUSDT"].isna().any() and frame["zscore"].isna().any(), "the gap stays a gap"
    assert frame["BTCUSDT"].iloc[-1] == fake_binance.price("BTCUSDT", now - 1)
    r.assert_buckets_are_the_exchanges()


def test_timeouts_leave_a_gap_not_a_shifted_bucket(rig, fake_binance):
    r = rig()
    fake_binance.delay_next(TICKER, 1.2, times=3)
    r.wait(
        lambda: (
            "timed out" in r.market.snapshot().status.last_error.message
            if r.market.snapshot().status.last_error
            else ""
        ),
        what="the timeout",
    )
    r.assert_serves_every_page()
    r.wait(lambda: not fake_binance._delays[TICKER], what="the delays to end")
    r.assert_resumes_within_two_polls()
    r.assert_buckets_are_the_exchanges()


def test_truncated_json_is_a_bad_response_not_a_crash(rig, fake_binance):
    r = rig()
    fake_binance.fail_next(TICKER, 200, '[{"symbol":"BTCUSDT","price":"108', times=2)
    r.wait(
        lambda: (
            "not JSON" in r.market.snapshot().status.last_error.message if r.market.snapshot().status.last_error else ""
        ),
        what="the bad body",
    )
    r.assert_serves_every_page()
    r.assert_resumes_within_two_polls()
    r.assert_buckets_are_the_exchanges()


def test_a_symbol_that_stops_trading_is_disconnected_and_the_other_leg_stays_live(rig, fake_binance, monkeypatch):
    monkeypatch.setattr(link_module, "HALTED_RECHECK_S", 2)
    r = rig()
    del fake_binance.trading["ETHUSDT"]
    r.wait(lambda: r.market.snapshot().status.leg("ETHUSDT").state == "disconnected", what="ETH to go down")
    legs = r.market.snapshot().status.as_dict()["legs"]
    assert "no longer trading" in legs["ETHUSDT"]["reason"]
    r.wait(lambda: r.market.snapshot().status.leg("BTCUSDT").state == "live", what="BTC to stay live")
    time.sleep(6)
    status = r.market.snapshot().status.as_dict()
    assert status["legs"]["BTCUSDT"]["state"] == "live" and status["legs"]["ETHUSDT"]["state"] == "disconnected"
    assert r.health()[0] == 503, "the pair cannot be computed: health says so"
    now = int(time.time())
    z = r.market.frame(r.market.snapshot(), now - 2, now - 1)["zscore"]
    assert z.isna().all(), "no z from a stale leg"
    shell = r.assert_serves_every_page()
    assert "ETHUSDT disconnected" in json.dumps(shell[ids.LEG_BADGES])
    assert r.market.save_settings({"webhook_url": "http://93.184.216.34/hook"}).webhook_url, "settings still editable"
    with pytest.raises(SettingsError, match="not a symbol trading"):
        r.market.save_settings({"symbol_a": "LUNAUSDT"})
    fake_binance.trading["ETHUSDT"] = "TRADING"
    r.wait(r.live, timeout=8, what="ETH to come back")
    r.assert_buckets_are_the_exchanges()


@pytest.mark.parametrize("jump", [300.0, -300.0])
def test_a_local_clock_jump_is_corrected_by_the_exchanges_clock(rig, fake_binance, jump):
    offset = [0.0]
    r = rig(offset=offset)
    offset[0] = jump  # suspend/resume, or an NTP step
    r.wait(lambda: abs(r.market.source().client.clock_offset_s + jump) < 1.0, what="the offset to be measured")
    r.assert_resumes_within_two_polls()
    assert abs(r.market.clock() - time.time()) < 1.0, "the market clock reads the exchange's time"
    assert r.health()[0] == 200
    r.assert_serves_every_page()
    time.sleep(2)
    r.assert_buckets_are_the_exchanges()
