"""The simulated market and source selection."""

import socket

import numpy as np
import pytest

from services import analytics
from services.alerts import Rule, RuleState, evaluate_rule
from services.binance import DEFAULT_STREAM_URL, stream_for
from services.sources import BinanceSource, SimSource, open_source
from services.stream import StreamSource

ORIGIN = 1_761_091_200


def test_sim_is_deterministic_however_it_is_advanced():
    now = ORIGIN + 5_000
    one = SimSource(seed=11, origin_s=ORIGIN, clock=lambda: now)
    many = SimSource(seed=11, origin_s=ORIGIN, clock=lambda: now)
    for s in range(ORIGIN, now, 333):
        many.history("BTCUSDT", s, s)
    a = [t.price for t in one.history("ETHUSDT", ORIGIN, now)]
    b = [t.price for t in many.history("ETHUSDT", ORIGIN, now)]
    assert a == b
    other = SimSource(seed=12, origin_s=ORIGIN, clock=lambda: now)
    assert [t.price for t in other.history("ETHUSDT", ORIGIN, now)] != a


def test_sim_prices_are_on_tick_and_realistic():
    now = ORIGIN + 3_600
    sim = SimSource(seed=1, origin_s=ORIGIN, clock=lambda: now)
    btc = np.array([t.price for t in sim.history("BTCUSDT", ORIGIN, now)])
    eth = np.array([t.price for t in sim.history("ETHUSDT", ORIGIN, now)])
    assert np.allclose(btc * 100, np.round(btc * 100), atol=1e-6)
    assert btc.min() > 90_000 and btc.max() < 130_000 and eth.min() > 3_000 and eth.max() < 5_000
    vol = np.diff(np.log(btc)).std()
    assert 5e-5 < vol < 2e-4, "BTC-like per-second volatility"


def test_sim_pair_is_cointegrated_in_log_price():
    """log ETH − 1.25 · log BTC removes the common factor: what is left mean-reverts."""
    now = ORIGIN + 20_000
    sim = SimSource(seed=2, origin_s=ORIGIN, clock=lambda: now)
    btc = np.log([t.price for t in sim.history("BTCUSDT", ORIGIN, now)])
    eth = np.log([t.price for t in sim.history("ETHUSDT", ORIGIN, now)])
    resid = eth - 1.25 * btc
    resid -= resid.mean()
    rho = np.corrcoef(resid[:-1], resid[1:])[0, 1]
    assert rho < 0.999 and abs(resid).max() < 0.02
    assert np.diff(btc).std() * np.sqrt(20_000) > 5 * resid.std(), "the legs wander far more than their spread"


def test_sim_demo_shows_alerts_within_minutes():
    now = ORIGIN + 3_600
    sim = SimSource(seed=7, origin_s=ORIGIN, clock=lambda: now)
    a = np.array([t.price for t in sim.history("BTCUSDT", ORIGIN, now)])
    b = np.array([t.price for t in sim.history("ETHUSDT", ORIGIN, now)])
    _, _, z = analytics.rolling_zscore(analytics.spread(a, b), 60)
    fired, _ = evaluate_rule(Rule("abs_z"), 2.0, z, np.arange(len(z)), RuleState())
    assert len(fired) >= 6, "an hour of the demo should raise several 2-sigma alerts"


def test_sim_poll_stamps_utc_now_and_rejects_unknown_symbols():
    sim = SimSource(seed=3, origin_s=ORIGIN, clock=lambda: ORIGIN + 10.5)
    ticks = sim.poll(["BTCUSDT", "SOLUSDT"])
    assert [t.symbol for t in ticks] == ["BTCUSDT", "SOLUSDT"]
    assert ticks[0].epoch == ORIGIN + 10.5
    assert ticks[0].price == sim.history("BTCUSDT", ORIGIN + 10, ORIGIN + 10)[0].price
    with pytest.raises(Exception, match="Unknown symbol"):
        sim.poll(["NOPE"])


def test_auto_falls_back_to_labelled_sim_when_binance_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source, why = open_source("auto", f"http://127.0.0.1:{port}", probe_timeout=0.5)
    assert isinstance(source, SimSource) and source.simulated and source.label == "Simulated data"
    assert "not reachable" in why


def test_auto_uses_binance_when_reachable_and_its_stream_when_it_is_known(fake_binance):
    source, why = open_source("auto", fake_binance.url)
    assert type(source) is BinanceSource and not source.simulated, "a host whose market stream is not known: REST"
    assert fake_binance.count("/api/v3/ping") == 1 and "no market stream known" in why
    source, why = open_source("auto", fake_binance.url, stream_url="ws://127.0.0.1:9")
    assert isinstance(source, StreamSource) and source.stream.url == "ws://127.0.0.1:9" and not source.simulated
    assert source.label.startswith("Binance REST") and source.label.endswith("(stream down)"), "until it streams"


def test_each_known_rest_host_streams_its_own_market():
    assert stream_for("https://api.binance.com/", DEFAULT_STREAM_URL) == "wss://stream.binance.com:9443"
    assert stream_for("https://data-api.binance.vision", DEFAULT_STREAM_URL) == "wss://data-stream.binance.vision"
    assert stream_for("https://api.binance.us", DEFAULT_STREAM_URL) == "wss://stream.binance.us:9443"
    assert stream_for("http://127.0.0.1:5000", DEFAULT_STREAM_URL) is None
    assert stream_for("https://api.binance.us", "ws://127.0.0.1:9") == "ws://127.0.0.1:9", "--stream-url wins"


def test_binance_history_paginates_klines(fake_binance):
    source = BinanceSource(open_source("binance", fake_binance.url)[0].client)
    ticks = source.history("ETHUSDT", ORIGIN, ORIGIN + 2_499)
    assert len(ticks) == 2_500 and fake_binance.count("/api/v3/klines") == 3
    assert [int(t.epoch) for t in ticks] == list(range(ORIGIN, ORIGIN + 2_500))
    assert ticks[0].time.microsecond == 999_999, "a close is the second's last price: stamped at its end"
    assert ticks[1234].price == fake_binance.price("ETHUSDT", ORIGIN + 1234)


def test_sim_workers_started_apart_simulate_the_same_market():
    now = [ORIGIN + 40_000.0]
    first = SimSource(seed=7, span_s=3_600, clock=lambda: now[0])
    early = [t.price for t in first.history("BTCUSDT", int(now[0]) - 100, int(now[0]))]
    now[0] += 500
    second = SimSource(seed=7, span_s=3_600, clock=lambda: now[0])
    assert [t.price for t in second.history("BTCUSDT", int(now[0]) - 600, int(now[0]) - 500)] == early
