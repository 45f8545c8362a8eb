"""A book of pairs: the watchlist (seeded by --pairs, owned by Settings and /api/pairs), one
upstream request for the union of its symbols, and each pair's own analysis and alert rules."""

import io
import json
import sqlite3
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from app import create_app, parse_args
from components.book import spark_points, sparkline
from services.alerts import Rule
from services.db import Database
from services.settings import MAX_PAIRS, AppConfig, SettingsError, SettingsStore, UserSettings, parse_pairs

TICKER = "/api/v3/ticker/price"


def store(tmp_path) -> SettingsStore:
    return SettingsStore(Database(tmp_path))


def names(book) -> list[str]:
    return ["-".join(s.pair) for s in book]


# --- the stored watchlist --------------------------------------------------------------------
def test_pairs_seed_the_first_start_only(tmp_path):
    store(tmp_path).seed((("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "BNBUSDT")))
    assert names(store(tmp_path).watchlist()) == ["BTCUSDT-ETHUSDT", "SOLUSDT-BNBUSDT"]
    store(tmp_path).seed((("XRPUSDT", "ADAUSDT"),))  # a later start: Settings owns the watchlist
    assert names(store(tmp_path).watchlist()) == ["BTCUSDT-ETHUSDT", "SOLUSDT-BNBUSDT"]


def test_a_database_of_the_previous_version_keeps_its_pair_and_analysis(tmp_path):
    """A database with only the settings row (made before watchlists) is upgraded in place."""
    old = replace(UserSettings(), symbol_a="SOLUSDT", symbol_b="BTCUSDT", window=90, hedge="ols")
    db = Database(tmp_path)
    db.query("SELECT 1")  # made, with this version's schema
    with sqlite3.connect(db.path) as conn:
        conn.execute("DROP TABLE pairs")  # the previous version's schema
        conn.execute(
            "INSERT INTO settings (id, body, version) VALUES (1, ?, 3)",
            (json.dumps({k: v for k, v in old.__dict__.items() if k != "rules"}),),
        )
    upgraded = SettingsStore(Database(tmp_path))
    upgraded.seed(())
    [only] = upgraded.watchlist()
    assert only.pair == ("SOLUSDT", "BTCUSDT") and only.window == 90 and only.hedge == "ols"


def test_each_pair_keeps_its_own_analysis_and_shares_the_poll_and_webhook(tmp_path):
    s = store(tmp_path)
    s.seed(())
    added = s.add_pair(("SOLUSDT", "BTCUSDT"))
    assert added.window == s.current().window, "a new pair starts from the first pair's analysis"
    own = replace(added, window=120, threshold=3.0, rules=(Rule("price_above", 200.0, "A"),))
    s.save(own, pair=added.pair)
    s.save(replace(s.current(), poll_interval_s=2.0, webhook_url="https://hooks.example.com/x"))
    later = store(tmp_path)  # another process
    first, second = later.watchlist()
    assert (first.window, first.threshold) == (60, 2.0)
    assert (second.window, second.threshold, second.rules) == (120, 3.0, own.rules)
    assert {s.poll_interval_s for s in (first, second)} == {2.0}
    assert {s.webhook_url for s in (first, second)} == {"https://hooks.example.com/x"}
    assert later.for_pair(("BTCUSDT", "SOLUSDT")) == second, "either order names the pair"


def test_adding_and_removing_pairs_is_validated(tmp_path):
    s = store(tmp_path)
    s.seed(())
    with pytest.raises(SettingsError, match="already in the watchlist"):
        s.add_pair(("ETHUSDT", "BTCUSDT"))
    for i in range(MAX_PAIRS - 1):
        s.add_pair((f"A{i}USDT", f"B{i}USDT"))
    with pytest.raises(SettingsError, match=f"At most {MAX_PAIRS}"):
        s.add_pair(("XUSDT", "YUSDT"))
    with pytest.raises(KeyError):
        s.remove_pair(("XUSDT", "YUSDT"))
    for i in range(MAX_PAIRS - 1):
        s.remove_pair((f"A{i}USDT", f"B{i}USDT"))
    with pytest.raises(SettingsError, match="at least one pair"):
        s.remove_pair(("BTCUSDT", "ETHUSDT"))
    assert names(s.watchlist()) == ["BTCUSDT-ETHUSDT"]
    s.add_pair(("SOLUSDT", "ETHUSDT"))
    with pytest.raises(SettingsError, match="already in the watchlist"):
        s.save(replace(s.current(), symbol_a="SOLUSDT"), pair=("BTCUSDT", "ETHUSDT"))


@pytest.mark.parametrize(
    "raw,needle",
    [
        ("BTCUSDT", "two symbols"),
        ("BTCUSDT-BTCUSDT", "must differ"),
        ("BTCUSDT-ETHUSDT,ETHUSDT-BTCUSDT", "twice"),
        ("BTC USDT-ETHUSDT", "two symbols"),
        (",".join(f"A{i}USDT-B{i}USDT" for i in range(MAX_PAIRS + 1)), f"At most {MAX_PAIRS}"),
    ],
)
def test_bad_pairs_flags_are_refused_with_the_reason(raw, needle):
    with pytest.raises(SettingsError, match=needle):
        parse_pairs(raw)


def test_pairs_come_from_the_flag_or_the_environment():
    assert parse_args(["--pairs", "btcusdt-ethusdt,SOLUSDT-BNBUSDT"], {})[0].pairs == (
        ("BTCUSDT", "ETHUSDT"),
        ("SOLUSDT", "BNBUSDT"),
    )
    assert parse_args([], {"PAIRS": "SOLUSDT-BNBUSDT"})[0].pairs == (("SOLUSDT", "BNBUSDT"),)
    with pytest.raises(SystemExit):
        parse_args(["--pairs", "nonsense"], {})


# --- against the loopback exchange ----------------------------------------------------------
@pytest.fixture
def book_client(fake_binance, tmp_path):
    config = AppConfig(
        source="binance",
        binance_url=fake_binance.url,
        data_dir=str(tmp_path),
        pairs=(("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "ETHUSDT")),
    )
    return create_app(config).server.test_client()


def wait_for_figures(client, timeout=20):
    deadline = time.time() + timeout
    while True:
        rows = client.get("/api/pairs").get_json()
        if all(r["zscore"] is not None for r in rows) or time.time() > deadline:
            return rows
        time.sleep(0.5)


def test_one_ticker_request_a_second_carries_every_watched_symbol(book_client, fake_binance):
    for _ in range(6):
        book_client.get("/api/health")
        time.sleep(0.5)
    calls = fake_binance.count(TICKER)
    assert 2 <= calls <= 5, f"{calls} ticker requests in about 3 s"
    seconds = {sym: set(fake_binance.served[sym]) for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    assert seconds["BTCUSDT"] == seconds["ETHUSDT"] == seconds["SOLUSDT"], "every symbol in every answer"


def test_api_pairs_lists_every_pair_with_its_own_live_figures(book_client, fake_binance):
    rows = wait_for_figures(book_client)
    assert [r["pair"] for r in rows] == ["BTCUSDT-ETHUSDT", "SOLUSDT-ETHUSDT"]
    btc, sol = rows
    assert set(btc) >= {
        "pair", "a", "b", "hedge", "tf", "window", "threshold", "price_a", "price_b", "beta", "spread",
        "zscore", "half_life_bars", "adf_pvalue", "state", "alerts_today",
    }  # fmt: skip
    assert (sol["a"], sol["b"], sol["state"]) == ("SOLUSDT", "ETHUSDT", "live")
    second = int(time.time())
    assert sol["price_a"] in {fake_binance.price("SOLUSDT", s) for s in range(second - 3, second + 1)}
    assert sol["spread"] == pytest.approx(sol["price_a"] - sol["price_b"])  # hedge none: β = 1
    assert btc["price_b"] == sol["price_b"], "one ETHUSDT price for both pairs"
    csv = book_client.get("/api/analytics.csv?pair=SOLUSDT-ETHUSDT&seconds=30").get_data(as_text=True)
    assert csv.splitlines()[0].startswith("timestamp_utc,SOLUSDT,ETHUSDT")


def test_pairs_are_added_and_removed_through_the_api_with_reasons(book_client):
    assert book_client.post("/api/pairs", json={"a": "solusdt", "b": "btcusdt"}).status_code == 201
    for body, needle in (
        ({"a": "BTCUSDT", "b": "SOLUSDT"}, "already in the watchlist"),
        ({"a": "ETHUSDT", "b": "ETHUSDT"}, "must differ"),
        ({"a": "NOPEUSDT", "b": "ETHUSDT"}, "not a symbol trading"),
        ({"a": "LUNAUSDT", "b": "ETHUSDT"}, "not a symbol trading"),  # on the exchange, but halted
        ({"a": "BTCUSDT"}, "required"),
        ({"a": "X", "b": "Y", "c": "Z"}, "JSON object"),
        ([1, 2], "JSON object"),
    ):
        resp = book_client.post("/api/pairs", json=body)
        assert resp.status_code == 400 and needle in resp.get_json()["error"], (body, resp.get_json())
    assert [r["pair"] for r in book_client.get("/api/pairs").get_json()] == [
        "BTCUSDT-ETHUSDT",
        "SOLUSDT-ETHUSDT",
        "SOLUSDT-BTCUSDT",
    ]
    assert book_client.delete("/api/pairs/SOLUSDT-BTCUSDT").status_code == 204
    assert book_client.delete("/api/pairs/SOLUSDT-BTCUSDT").status_code == 404
    assert book_client.delete("/api/pairs/nonsense").status_code == 400
    assert book_client.delete("/api/pairs/ETHUSDT-SOLUSDT").status_code == 204
    resp = book_client.delete("/api/pairs/BTCUSDT-ETHUSDT")
    assert resp.status_code == 409 and "at least one pair" in resp.get_json()["error"]
    resp = book_client.get("/api/analytics.csv?pair=SOLUSDT-ETHUSDT")
    assert resp.status_code == 400 and "not a watched pair" in resp.get_json()["error"]


def test_every_pair_alerts_on_its_own_rules_naming_its_pair(book_client, fake_binance, tmp_path):
    """A rule of the second pair fires on that pair's bars, is logged once, and names the pair."""
    s = SettingsStore(Database(tmp_path))
    sol = s.for_pair(("SOLUSDT", "ETHUSDT"))
    # The fake SOL price wiggles around 150 every second; once it fired, the rule rests an hour.
    s.save(replace(sol, rules=(Rule("price_above", 150.0, "A", 0.0, 3600),)), pair=sol.pair)
    deadline = time.time() + 20

    def sol_alerts():
        lines = book_client.get("/api/alerts.csv").get_data(as_text=True).splitlines()[1:]
        return [line for line in lines if ",SOLUSDT/ETHUSDT," in line]

    while not sol_alerts() and time.time() < deadline:
        book_client.get("/api/health")
        time.sleep(0.5)
    for _ in range(4):  # bars go on closing: the rule fired once, on its crossing
        book_client.get("/api/health")
        time.sleep(0.5)
    [alert] = sol_alerts()
    assert "price above" in alert and "SOLUSDT" in alert.split(",")[3], alert
    rows = {r["pair"]: r for r in book_client.get("/api/pairs").get_json()}
    assert rows["SOLUSDT-ETHUSDT"]["alerts_today"] == 1


def test_three_pairs_are_live_on_one_ticker_call_a_second_and_each_csv_is_the_exchanges_prices(fake_binance, tmp_path):
    pairs = (("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "ETHUSDT"), ("SOLUSDT", "BTCUSDT"))
    client = create_app(
        AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(tmp_path), pairs=pairs)
    ).server.test_client()
    wait_for_figures(client)
    start = time.time()
    while time.time() < start + 8:
        client.get("/api/health")  # a reader every 0.25 s, as four tabs would be
        time.sleep(0.25)
    end = time.time()
    calls = [t for t in fake_binance.times[TICKER] if start <= t < end]
    slots = int(end) - int(start) + 1
    assert 0.7 * (slots - 1) <= len(calls) <= slots, f"{len(calls)} ticker calls in {end - start:.1f} s"
    rows = client.get("/api/pairs").get_json()
    assert [(r["pair"], r["state"]) for r in rows] == [("-".join(p), "live") for p in pairs]
    closed = int(time.time()) - 3
    for a, b in pairs:
        csv = client.get(f"/api/analytics.csv?pair={a}-{b}&seconds=60").get_data(as_text=True)
        table = pd.read_csv(io.StringIO(csv), parse_dates=["timestamp_utc"]).dropna(subset=[a, b])
        table = table[table["timestamp_utc"].map(lambda t: int(t.timestamp())) <= closed]
        assert len(table) >= 40, f"{a}-{b}: {len(table)} closed seconds"
        for _, row in table.iterrows():
            second = int(row["timestamp_utc"].timestamp())
            assert (row[a], row[b]) == (fake_binance.price(a, second), fake_binance.price(b, second)), (a, b, second)


def test_the_sparkline_puts_each_bar_at_its_place_in_the_hour_and_leaves_the_unrecorded_part_empty():
    end = 7_200_000 + 3_599  # the hour is [7_200_000, 7_203_599]
    ten_minutes = np.arange(end - 599, end + 1)  # only the last 10 minutes were recorded
    z = np.sin(ten_minutes / 50.0)
    points = spark_points(ten_minutes, z, end, bar_s=1)
    assert len(points) == 120 and np.isnan(points[:100]).all(), "50 minutes unrecorded: a gap, not stretched"
    assert points[100:].tolist() == z[29::30].tolist(), "each 30 s slot shows its last bar"

    hour = np.arange(end - 3_599, end + 1)
    with_gap = np.delete(hour, slice(1_800, 1_890))  # 90 s missing in the middle
    points = spark_points(with_gap, np.ones(len(with_gap)), end, bar_s=1)
    assert np.isnan(points[60:63]).all() and np.isfinite(np.delete(points, [60, 61, 62])).all()

    minutes = np.arange(end - 3_599, end + 1, 60)  # 1m bars: one point a bar
    points = spark_points(minutes, np.arange(60.0), end, bar_s=60)
    assert points.tolist() == list(np.arange(60.0))
    assert np.isnan(spark_points(np.array([end - 3_600, end + 1]), np.ones(2), end, bar_s=1)).all(), "outside the hour"
    assert sparkline(points, 2.0).startswith("data:image/svg+xml")
