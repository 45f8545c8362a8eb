"""The HTTP API through Flask's test client, on the simulation and on the loopback fake Binance."""

import io
import json
import time

import numpy as np
import pandas as pd
import pytest

from app import create_app
from services.settings import AppConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sim_client(tmp_path):
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    return app.server.test_client()


def read_csv(resp) -> pd.DataFrame:
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    return pd.read_csv(io.StringIO(resp.get_data(as_text=True)))


def test_health_tells_source_and_freshness(sim_client):
    body = sim_client.get("/api/health").get_json()
    assert body["status"] == "ok" and body["source"] == "sim" and body["simulated"] is True
    assert body["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert body["last_tick_utc"].endswith("Z") and 0 <= body["age_s"] < 2
    assert body["last_error"] is None


def test_analytics_csv_columns_and_utc_times(sim_client):
    df = read_csv(sim_client.get("/api/analytics.csv?seconds=120"))
    assert list(df.columns) == [
        "timestamp_utc",
        "BTCUSDT",
        "ETHUSDT",
        "beta",
        "alpha",
        "spread",
        "mean",
        "std",
        "zscore",
    ]
    assert len(df) == 120
    assert (df["beta"] == 1).all() and (df["alpha"] == 0).all()
    assert df["timestamp_utc"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
    t = pd.to_datetime(df["timestamp_utc"])
    assert (t.diff().dropna() == pd.Timedelta(seconds=1)).all()
    np.testing.assert_allclose(df["spread"], df["BTCUSDT"] - df["ETHUSDT"], rtol=1e-9)
    assert df["zscore"].notna().sum() > 100, "backfill makes z defined from the first request"


def test_analytics_csv_window_parameter_changes_z(sim_client):
    z60 = read_csv(sim_client.get("/api/analytics.csv?seconds=30&window=60"))["zscore"]
    z10 = read_csv(sim_client.get("/api/analytics.csv?seconds=30&window=10"))["zscore"]
    assert not np.allclose(z60.to_numpy(), z10.to_numpy(), equal_nan=True)


def test_ticks_csv(sim_client):
    sim_client.get("/api/health")
    df = read_csv(sim_client.get("/api/ticks.csv?symbol=ethusdt"))
    assert list(df.columns) == ["timestamp_utc", "symbol", "price"]
    assert set(df["symbol"]) == {"ETHUSDT"} and df["timestamp_utc"].str.endswith("Z").all()


@pytest.mark.parametrize(
    "url,needle",
    [
        ("/api/analytics.csv?a=NOPEUSDT", "NOPEUSDT"),
        ("/api/analytics.csv?window=1", "Window"),
        ("/api/analytics.csv?window=abc", "number"),
        ("/api/analytics.csv?window=", "required"),
        ("/api/analytics.csv?seconds=-5", "seconds"),
        ("/api/analytics.csv?a=SOLUSDT", "watched pair"),
        ("/api/ticks.csv?symbol=%3Dcmd", "not a symbol"),
        ("/api/ticks.csv?limit=zero", "limit"),
        ("/api/chart/candles.png", "unknown chart"),
        ("/api/analytics.csv?hedge=magic", "hedge"),
        ("/api/analytics.csv?tf=2m", "tf"),
        ("/api/analytics.csv?log=maybe", "log"),
        ("/api/chart/zscore.png?threshold=-1", "from 0.01 to 100"),
        ("/api/chart/zscore.png?threshold=1e308", "from 0.01 to 100"),
        ("/api/chart/zscore.png?threshold=inf", "finite"),
    ],
)
def test_bad_parameters_get_one_line_json_400(sim_client, url, needle):
    resp = sim_client.get(url)
    assert resp.status_code == 400
    text = resp.get_data(as_text=True)
    assert text.count("\n") <= 1 and "Traceback" not in text
    assert needle.lower() in json.loads(text)["error"].lower()


def test_unknown_api_path_is_json_404(sim_client):
    resp = sim_client.get("/api/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "application/json"
    assert resp.get_json() == {"error": "no API route '/api/nothing-here'; see the README for the routes"}


@pytest.mark.parametrize(
    "url",
    [
        "/api/analytics.csv?window=" + "x" * 10_000,
        "/api/ticks.csv?limit=" + "9" * 4_000,
        "/api/ticks.csv?symbol=" + "A" * 10_000,
        "/api/" + "p" * 5_000,
    ],
)
def test_an_echoed_input_is_cut_to_80_characters(sim_client, url):
    resp = sim_client.get(url)
    assert resp.status_code in (400, 404)
    error = resp.get_json()["error"]
    assert len(error) < 250 and "…" in error


@pytest.mark.parametrize("kind", ["price", "spread", "zscore"])
def test_chart_png_is_rendered_server_side(sim_client, kind):
    resp = sim_client.get(f"/api/chart/{kind}.png?seconds=300&width=600&height=300")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.data.startswith(PNG_MAGIC) and len(resp.data) > 5_000


def test_chart_png_without_a_browser_is_503_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome-here"))
    client = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=600)).server.test_client()
    resp = client.get("/api/chart/price.png")
    assert resp.status_code == 503
    assert "apt-get install -y chromium" in resp.get_json()["error"]


def test_against_fake_binance_csv_matches_the_server_second_by_second(fake_binance, tmp_path):
    """The 'done when' check: the app's buckets are the server's prices, its z a rolling
    recomputation from its own rows."""
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path)))
    client = app.server.test_client()
    first = time.time()
    deadline = first + 6
    while time.time() < deadline:
        assert client.get("/api/health").status_code == 200
        time.sleep(0.2)
    health = client.get("/api/health").get_json()
    assert health["source"] == "binance" and health["simulated"] is False and health["status"] == "ok"
    df = read_csv(client.get("/api/analytics.csv?seconds=600&window=30"))
    seconds = (pd.to_datetime(df["timestamp_utc"]) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    first_poll = min(min(v) for v in fake_binance.served.values())
    for sym in ("BTCUSDT", "ETHUSDT"):
        raw = [
            fake_binance.served[sym].get(s, np.nan) if s >= first_poll else fake_binance.price(sym, s) for s in seconds
        ]
        expected = pd.Series(raw).ffill(limit=3).to_numpy()
        np.testing.assert_array_equal(df[sym].to_numpy(), expected)
    assert len(fake_binance.served["BTCUSDT"]) >= 5
    spread = df["BTCUSDT"] - df["ETHUSDT"]
    z = ((spread - spread.rolling(30).mean()) / spread.rolling(30).std()).to_numpy()
    np.testing.assert_allclose(df["zscore"].to_numpy()[29:], z[29:], rtol=1e-6, atol=1e-9, equal_nan=True)


def test_backtest_csv(sim_client):
    df = read_csv(sim_client.get("/api/backtest.csv?entry=1&exit=0&stop=&cost_bps=0&seconds=600"))
    assert list(df.columns) == [
        "entry_time",
        "exit_time",
        "side",
        "entry_z",
        "beta",
        "exit_reason",
        "return_pct",
        "bars",
    ]
    assert len(df) >= 1 and set(df["side"]) <= {"long spread", "short spread"}
    assert (df["entry_z"].abs() >= 1).all()


@pytest.mark.parametrize(
    "query,needle",
    [
        ("entry=0", "greater than 0"),
        ("entry=2&exit=3", "inside"),
        ("entry=2&stop=1", "beyond"),
        ("cost_bps=-1", "cost"),
        ("hedge=magic", "hedge"),
        ("tf=2m", "tf"),
    ],
)
def test_backtest_csv_bad_parameters(sim_client, query, needle):
    resp = sim_client.get(f"/api/backtest.csv?{query}")
    assert resp.status_code == 400 and needle in resp.get_json()["error"].lower()


@pytest.mark.parametrize("hedge", ["none", "ols", "rolling-ols", "kalman", "robust"])
@pytest.mark.parametrize("tf", ["1s", "1m"])
def test_analytics_csv_hedge_and_timeframe(sim_client, hedge, tf):
    # saved settings decide how much history is backfilled: 3 windows of 1m bars
    sim_client.application.extensions["market"].save_settings({"timeframe": tf, "window": 20})
    sim_client.get("/api/health")
    time.sleep(1.1)  # the next poll deepens the backfill
    df = read_csv(sim_client.get(f"/api/analytics.csv?hedge={hedge}&tf={tf}&window=20&seconds=1800"))
    t = pd.to_datetime(df["timestamp_utc"])
    step = pd.Timedelta(seconds=1 if tf == "1s" else 60)
    assert len(t) >= 20 and (t.diff().dropna() == step).all(), "one row per bar of the timeframe, none missing"
    if tf == "1m":
        assert (t.dt.second == 0).all(), "1m bars are labelled by their UTC open minute"
    spread = df["BTCUSDT"] - (df["beta"] * df["ETHUSDT"] + df["alpha"])
    np.testing.assert_allclose(df["spread"], spread, rtol=1e-9, atol=1e-6, equal_nan=True)
    if hedge != "none":
        assert df["beta"].notna().sum() > 5 and df["beta"].nunique() > 1


def test_health_is_503_while_the_data_is_stale(fake_binance, tmp_path):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path)))
    client = app.server.test_client()
    assert client.get("/api/health").status_code == 200
    fake_binance.fail_next(
        "/api/v3/ticker/price", 500, {"code": -1000, "msg": "An unknown error occurred"}, times=1_000
    )
    deadline = time.time() + 15
    while (resp := client.get("/api/health")).status_code == 200:
        assert time.time() < deadline, "health never said stale"
        time.sleep(0.5)
    body = resp.get_json()
    assert resp.status_code == 503 and body["status"] == "stale" and body["last_error"]["status"] == 500


def test_csv_text_cells_are_neutralised_against_formula_injection(tmp_path):
    from api import csv_text
    from services.alerts import Alert

    assert [csv_text(v) for v in ("=1+1", "+A1", "-2+3", "@SUM(A1)", "\tx", "BTCUSDT", -1.5, 2)] == [
        "'=1+1",
        "'+A1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "BTCUSDT",
        -1.5,
        2,
    ]
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    market = app.server.extensions["market"]
    evil = '=HYPERLINK("http://x.test","click")'
    market.alerts.add([Alert(1_761_091_200, evil, "test:1", "test", "-BTC/ETH", -2.5, 2.0, -2.5, -7.0)])
    rows = read_csv(app.server.test_client().get("/api/alerts.csv"))
    assert rows["rule"].iloc[0] == "'" + evil and rows["pair"].iloc[0] == "'-BTC/ETH"
    assert rows["zscore"].iloc[0] == -2.5 and rows["spread"].iloc[0] == -7.0, "numbers stay numbers"


def test_settings_and_test_alert_routes(sim_client):
    settings = sim_client.get("/api/settings").get_json()
    assert settings["symbol_a"] == "BTCUSDT" and settings["rules"][0]["kind"] == "abs_z"
    resp = sim_client.post("/api/alerts/test")
    assert resp.status_code == 201 and resp.get_json()["rule"] == "Test alert"
    assert "Test alert" in sim_client.get("/api/alerts.csv").get_data(as_text=True)
    wrong_method = sim_client.get("/api/alerts/test")
    assert wrong_method.status_code in (404, 405) and "error" in wrong_method.get_json()
    assert sim_client.get("/api/alerts.csv?limit=0").status_code == 400


def test_exports_stream_in_chunks_and_wait_for_one_of_the_slots(tmp_path, monkeypatch):
    import api

    monkeypatch.setattr(api, "EXPORT_WAIT_S", 0.2)  # (read when the app is made)
    sim_client = create_app(AppConfig(source="sim", data_dir=str(tmp_path))).server.test_client()
    resp = sim_client.get("/api/analytics.csv?seconds=3600")
    assert resp.is_streamed
    chunks = list(resp.response)
    assert len(chunks) == 1 + -(-3_600 // api.CHUNK_ROWS), "a header, then CHUNK_ROWS rows at a time"
    assert sum(c.count(b"\n") for c in chunks) == 3_601
    held = [sim_client.get("/api/ticks.csv") for _ in range(api.EXPORT_SLOTS)]  # streamed, not read yet
    started = time.monotonic()
    busy = sim_client.get("/api/analytics.csv?seconds=60")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert time.monotonic() - started < 5, "it waited EXPORT_WAIT_S for a slot, then answered"
    assert "exports are already running" in busy.get_json()["error"]
    for r in held:
        r.close()  # the client hung up: the slots are free again
    assert read_csv(sim_client.get("/api/analytics.csv?seconds=60")).shape[0] == 60


def test_settings_can_be_changed_over_the_api_with_the_pages_validation(sim_client):
    resp = sim_client.patch("/api/settings", json={"threshold": 2.5, "window": 90, "rules": [{"kind": "z_above"}]})
    assert resp.status_code == 200 and resp.get_json()["threshold"] == 2.5
    saved = sim_client.get("/api/settings").get_json()
    assert (saved["threshold"], saved["window"], saved["rules"][0]["kind"]) == (2.5, 90, "z_above")
    for body, field in [
        ({"threshold": 0}, "Threshold"),
        ({"threshold": True}, "Threshold"),
        ({"window": 1}, "Window"),
        ({"poll_interval_s": "fast"}, "Poll interval"),
        ({"hedge": "magic"}, "Hedge method"),
        ({"symbol_a": "NOPEUSDT"}, "Symbol A"),
        ({"webhook_url": "http://169.254.169.254/"}, "Webhook URL"),
        ({"binance_url": "http://evil.example"}, "Binance base URL"),
        ({"rules": [{"kind": "abs_z", "cooldown_s": -1}]}, "Cooldown"),
        ({"threshold": 3, "colour": "red"}, "unknown field 'colour'"),
        ([1, 2], "JSON object"),
        ({}, "JSON object"),
    ]:
        bad = sim_client.patch("/api/settings", json=body)
        assert bad.status_code == 400 and field in bad.get_json()["error"], (body, bad.get_json())
        assert sim_client.get("/api/settings").get_json() == saved, "nothing saved"
    huge = sim_client.patch("/api/settings", data=b"x" * (2 << 20), content_type="application/json")
    assert huge.status_code == 413 and "error" in huge.get_json()
    assert (
        sim_client.patch("/api/settings", json={"window": 30}, headers={"Origin": "http://evil.example"}).status_code
        == 403
    )
    assert sim_client.get("/api/settings").get_json() == saved
