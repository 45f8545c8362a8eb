"""The REST client against the loopback fake exchange: shapes, parameters and every error kind."""

import socket
from datetime import UTC

import pytest

from services.binance import (
    RETRY,
    BinanceAPIError,
    BinanceBadResponse,
    BinanceClient,
    BinanceRateLimited,
    BinanceUnreachable,
    clock_offset,
    exchange_time,
    symbols_param,
)


def test_symbols_param_has_no_spaces():
    assert symbols_param(["BTCUSDT", "ETHUSDT"]) == '["BTCUSDT","ETHUSDT"]'


def test_ticker_prices_one_request_for_both(fake_binance):
    client = BinanceClient(fake_binance.url)
    quotes = client.ticker_prices(["BTCUSDT", "ETHUSDT"])
    assert fake_binance.count("/api/v3/ticker/price") == 1
    assert [q.symbol for q in quotes] == ["BTCUSDT", "ETHUSDT"]
    for q in quotes:
        assert q.time.tzinfo == UTC
        assert q.price == fake_binance.served[q.symbol][int(q.time.timestamp())]
    assert client.used_weight == 7


def test_klines_parse_and_times_are_utc(fake_binance):
    client = BinanceClient(fake_binance.url)
    rows = client.klines("BTCUSDT", "1s", start_ms=1_761_091_200_000, end_ms=1_761_091_209_999, limit=1000)
    assert len(rows) == 10
    assert rows[0].open_time.isoformat() == "2025-10-22T00:00:00+00:00"
    assert rows[3].close == fake_binance.price("BTCUSDT", 1_761_091_203)


def test_trading_symbols_excludes_non_trading(fake_binance):
    assert BinanceClient(fake_binance.url).trading_symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_invalid_symbol_is_a_typed_error(fake_binance):
    with pytest.raises(BinanceAPIError) as err:
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT", "NOPEUSDT"])
    assert err.value.status == 400 and err.value.code == -1121
    assert "Invalid symbol" in err.value.message


@pytest.mark.parametrize("status", [418, 429])
def test_rate_limit_carries_retry_after(fake_binance, status):
    fake_binance.fail_next(
        "/api/v3/ticker/price", status, {"code": -1003, "msg": "Too many requests"}, headers={"Retry-After": "17"}
    )
    with pytest.raises(BinanceRateLimited) as err:
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])
    assert err.value.status == status and err.value.retry_after == 17.0


def test_restricted_location_is_explained(fake_binance):
    fake_binance.fail_next(
        "/api/v3/ticker/price", 451, {"code": 0, "msg": "Service unavailable from a restricted location"}
    )
    with pytest.raises(BinanceAPIError) as err:
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])
    assert err.value.status == 451 and "data-api.binance.vision" in err.value.message


def test_server_error_without_json_body(fake_binance):
    fake_binance.fail_next("/api/v3/ticker/price", 502, "<html>Bad gateway</html>", times=3)
    with pytest.raises(BinanceAPIError) as err:
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])
    assert err.value.status == 502 and err.value.code is None
    assert fake_binance.count("/api/v3/ticker/price") == 3, "tried once, retried twice"


def test_a_5xx_burst_is_retried_with_backoff(fake_binance):
    fake_binance.fail_next("/api/v3/ticker/price", 503, {"code": -1001, "msg": "Internal error"}, times=2)
    quotes = BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])
    assert quotes[0].symbol == "BTCUSDT" and fake_binance.count("/api/v3/ticker/price") == 3
    times = fake_binance.times["/api/v3/ticker/price"]
    assert times[2] - times[1] >= 0.09, "exponential backoff before the second retry"


def test_backoff_is_exponential_with_jitter():
    retry = RETRY
    for _ in range(2):
        retry = retry.increment(method="GET", url="/x", error=ConnectionError("down"))
    waits = [retry.get_backoff_time() for _ in range(200)]
    cap = 0.1 * 2**1  # backoff_factor * 2 ** (retries - 1): the wait before the second retry
    assert all(cap / 2 <= w <= cap for w in waits)
    assert len(set(waits)) > 100, "the waits are random, not in lockstep"


def test_rate_limit_is_not_retried(fake_binance):
    fake_binance.fail_next(
        "/api/v3/ticker/price", 429, {"code": -1003, "msg": "Too many"}, headers={"Retry-After": "5"}
    )
    with pytest.raises(BinanceRateLimited):
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])
    assert fake_binance.count("/api/v3/ticker/price") == 1


def test_truncated_json_is_a_bad_response(fake_binance):
    fake_binance.fail_next("/api/v3/ticker/price", 200, '[{"symbol":"BTCUSDT","pri')
    with pytest.raises(BinanceBadResponse):
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])


def test_wrong_shape_is_a_bad_response(fake_binance):
    fake_binance.fail_next("/api/v3/ticker/price", 200, {"unexpected": True})
    with pytest.raises(BinanceBadResponse):
        BinanceClient(fake_binance.url).ticker_prices(["BTCUSDT"])


def test_nobody_listening_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BinanceUnreachable):
        BinanceClient(f"http://127.0.0.1:{port}", connect_timeout=0.5, read_timeout=0.5).ping()


def test_read_timeout_is_unreachable():
    with socket.socket() as srv:  # accepts, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        with pytest.raises(BinanceUnreachable, match="timed out"):
            BinanceClient(f"http://127.0.0.1:{port}", connect_timeout=0.5, read_timeout=0.3).ping()


def test_exchange_time_uses_the_date_header_second():
    # Date names second 100; the local midpoint (100.4) agrees, so its fraction is kept.
    t = exchange_time("Thu, 01 Jan 1970 00:01:40 GMT", 100.3, 100.5)
    assert t.timestamp() == pytest.approx(100.4) and t.tzinfo == UTC
    # Local clock 5 s ahead: the exchange's second wins.
    assert int(exchange_time("Thu, 01 Jan 1970 00:01:40 GMT", 105.3, 105.5).timestamp()) == 100
    assert exchange_time(None, 10.0, 11.0).timestamp() == pytest.approx(10.5)
    assert exchange_time("garbage", 10.0, 11.0).timestamp() == pytest.approx(10.5)


def test_clock_offset_is_zero_while_the_clocks_agree_and_the_difference_after_a_jump():
    header = "Thu, 01 Jan 1970 00:01:40 GMT"  # second 100
    assert clock_offset(header, 100.2, 100.4) == 0.0
    assert clock_offset(header, 101.0, 101.2) == 0.0, "within the header's resolution"
    assert clock_offset(header, 400.2, 400.4) == pytest.approx(100.5 - 400.3)
    assert clock_offset(None, 1.0, 2.0) is None


def test_the_environments_proxy_and_ca_bundle_are_honoured_read_once_per_host(fake_binance, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: used, it would fail
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,data-api.binance.vision")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client = BinanceClient("https://api.binance.com")
    assert client.session.proxies.get("https") == "http://proxy.example:3128"
    assert client.session.verify == "/etc/ssl/certs/ca-certificates.crt"
    client.set_base_url("https://data-api.binance.vision")
    assert not client.session.proxies.get("https"), "NO_PROXY names the host"
    local = BinanceClient(fake_binance.url)
    assert [q.symbol for q in local.ticker_prices(["BTCUSDT"])] == ["BTCUSDT"], "NO_PROXY: straight to the host"
