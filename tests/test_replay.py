"""The replay source: Binance bulk CSV (header or not, ms or µs) and klines JSON, as if live."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from app import create_app
from fake_binance import RECORDED, SHARED_DATA
from services.replay import ReplayError, ReplaySource, load_recording, parse_speed
from services.settings import AppConfig

BTC, ETH = (str(SHARED_DATA / RECORDED[s]) for s in ("BTCUSDT", "ETHUSDT"))
DAY0 = 1_761_091_200


def recorded(symbol):
    return pd.read_csv(SHARED_DATA / RECORDED[symbol])


def test_csv_with_header_in_milliseconds():
    rec = load_recording(BTC)
    df = recorded("BTCUSDT")
    assert rec.symbol == "BTCUSDT" and rec.interval_s == 60 and len(rec.times) == 1_440
    assert rec.times[0] == DAY0 + 59, "a close is the price at its bar's last second"
    np.testing.assert_array_equal(rec.closes, df["close"].to_numpy())


def test_csv_without_header_in_microseconds(tmp_path):
    df = recorded("ETHUSDT")
    df["open_time"] *= 1_000
    df["close_time"] = df["close_time"] * 1_000 + 999
    path = tmp_path / "ETHUSDT-1m-2025-10-22.csv"
    df.to_csv(path, header=False, index=False)
    rec = load_recording(str(path))
    assert rec.symbol == "ETHUSDT" and rec.times[0] == DAY0 + 59 and rec.closes[-1] == df["close"].iloc[-1]


def test_klines_json_with_symbol_given(tmp_path):
    rows = recorded("BTCUSDT").head(5).astype(str).values.tolist()
    rows = [[int(float(r[0])), *r[1:6], int(float(r[6])), *r[7:]] for r in rows]
    path = tmp_path / "btc.json"
    path.write_text(json.dumps(rows))
    rec = load_recording(f"BTCUSDT={path}")
    assert rec.symbol == "BTCUSDT" and len(rec.closes) == 5 and rec.times[1] == DAY0 + 119


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("BTCUSDT-1m-x.csv", None, "cannot read"),
        ("prices.csv", "1,2,3,4,5,6,7,8,9,10,11,12\n", "symbol from the file name"),
        ("BTCUSDT-1m-x.csv", "1761091200000,1,2,3\n1761091260000,1,2,3\n", "12 kline columns"),
        ("BTCUSDT-1m-x.csv", "1761091260000,1,1,1,1,1,0,0,0,0,0,0\n1761091200000,1,1,1,1,1,0,0,0,0,0,0\n", "increase"),
        ("BTCUSDT-1m-x.csv", "1761091200000,1,1,1,1,1,0,0,0,0,0,0\n", "at least two"),
        ("BTCUSDT-1m-x.json", "[[1, 2]", "JSON array"),
    ],
)
def test_broken_files_are_clear_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReplayError, match=needle):
        load_recording(str(path))


def test_speed_parsing():
    assert parse_speed("max") == "max" and parse_speed("10") == 10.0
    for bad in ("0", "-2", "fast", "nan"):
        with pytest.raises(ReplayError, match="positive number or max"):
            parse_speed(bad)


def test_replay_clock_poll_and_history_never_look_ahead():
    wall = [1_000.0]
    src = ReplaySource([BTC, ETH], speed=10, wall=lambda: wall[0])
    assert src.now() == DAY0 + 3 * 3_600 and src.interval_s == 60
    wall[0] += 6  # 60 recorded seconds
    now = src.now()
    assert now == DAY0 + 3 * 3_600 + 60
    ticks = src.poll(["BTCUSDT", "ETHUSDT"])
    assert all(t.epoch <= now for t in ticks) and int(ticks[0].epoch) == DAY0 + 3 * 3_600 + 59
    hist = src.history("BTCUSDT", DAY0, DAY0 + 86_400)
    assert hist[-1].epoch <= now and len(hist) == 181
    assert src.label == "Replay 2025-10-22T00:00Z → 2025-10-22T23:59Z · ×10"
    assert ReplaySource([BTC, ETH], speed="max").now() == DAY0 + 86_399


def test_replay_runs_the_recorded_day_end_to_end(tmp_path):
    app = create_app(AppConfig(source="replay", data_dir=str(tmp_path), replay=(BTC, ETH), replay_speed="max"))
    client = app.server.test_client()
    market = app.server.extensions["market"]
    market.save_settings({"timeframe": "1m", "hedge": "rolling-ols", "window": 30})
    health = client.get("/api/health").get_json()
    assert health["source"] == "replay" and health["simulated"] is False and health["status"] == "ok"
    assert health["last_tick_utc"] == "2025-10-22T23:59:59.000Z"
    csv = client.get("/api/analytics.csv?tf=1m&seconds=86400&hedge=rolling-ols&window=30")
    df = pd.read_csv(io.StringIO(csv.get_data(as_text=True)))
    btc, eth = recorded("BTCUSDT"), recorded("ETHUSDT")
    times = pd.to_datetime(btc["open_time"], unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    got = df.set_index("timestamp_utc")
    np.testing.assert_array_equal(got.loc[times, "BTCUSDT"].to_numpy(), btc["close"].to_numpy())
    np.testing.assert_array_equal(got.loc[times, "ETHUSDT"].to_numpy(), eth["close"].to_numpy())
    k = 600  # rolling OLS of BTC on ETH over the 30 bars ending at bar k
    b, a = np.polyfit(eth["close"][k - 29 : k + 1], btc["close"][k - 29 : k + 1], 1)
    assert got.loc[times[k], "beta"] == pytest.approx(b, rel=1e-8)
    assert got.loc[times[k], "alpha"] == pytest.approx(a, rel=1e-6)
    assert got["zscore"].notna().sum() > 1_000
