"""Figure builders and the live-chart update logic (no browser)."""

import bisect
import copy
import json

import numpy as np
import pandas as pd
from cachelib import SimpleCache
from plotly.io.json import to_json_plotly

from components import figures
from components.tables import tick_rows
from pages import _tick as chart_mod
from pages._tick import chart
from services.alerts import Alert
from services.engine import Params
from services.market import MarketService
from services.settings import AppConfig
from services.sources import SimSource, Tick, utc_from_epoch

PAIR = ("BTCUSDT", "ETHUSDT")
PARAMS = Params(PAIR, window=60)


def frame(n=5, start="2025-10-22T00:00:00Z"):
    idx = pd.date_range(start, periods=n, freq="s")
    vals = np.arange(n, dtype=float)
    vals[2] = np.nan
    return pd.DataFrame(
        {
            "BTCUSDT": vals + 100,
            "ETHUSDT": vals + 10,
            "beta": vals,
            "alpha": vals,
            "spread": vals,
            "mean": vals,
            "std": vals,
            "zscore": vals / 2,
        },
        index=idx.rename("timestamp_utc"),
    )


def test_every_chart_keeps_zoom_and_says_utc():
    for kind in figures.CHART_KINDS:
        fig = figures.chart_figure(kind, frame(), PARAMS, 2.0)
        assert fig.layout.uirevision == figures.UIREVISION
        assert fig.layout.xaxis.title.text == "time (UTC)"
        assert fig.layout.meta["export_name"] == f"{kind}_BTCUSDT-ETHUSDT"


def test_gaps_are_breaks_not_interpolations():
    body = json.loads(to_json_plotly(figures.spread_figure(frame(), Params(PAIR, window=3))))
    assert body["data"][0]["y"][2] is None and body["data"][0]["connectgaps"] is False
    assert body["data"][0]["x"][0].startswith("2025-10-22T00:00:00")


def test_titles_say_hedge_log_and_timeframe():
    fig = figures.spread_figure(frame(), Params(PAIR, tf="5m", hedge="kalman", window=30, log=True))
    assert fig.layout.title.text == (
        "Spread ln BTCUSDT − (β·ln ETHUSDT + α) with its 30-bar mean · kalman hedge · log prices · 5m bars"
    )
    assert figures.beta_figure(frame(), PARAMS).data[1].yaxis == "y2"


def test_long_series_use_webgl():
    assert figures.price_figure(frame(20_000), PAIR).data[0].type == "scattergl"
    assert figures.price_figure(frame(100), PAIR).data[0].type == "scatter"


def test_zscore_bands_and_alert_markers():
    second = int(pd.Timestamp("2025-10-22T00:00:03Z").timestamp())
    z_alert = Alert(second, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "BTCUSDT/ETHUSDT", 2.4, 2.0, 2.4, 1.0)
    price_alert = Alert(
        second, "BTCUSDT price above 1", "price_above:1:A:0:0", "price_above", "BTCUSDT/ETHUSDT", 101.0, 1.0, 0.5, 1.0
    )
    fig = figures.zscore_figure(frame(), PARAMS, 2.0, [z_alert, price_alert])
    levels = sorted((s.y0, s.y1) for s in fig.layout.shapes if s.type == "line")
    assert levels == [(-2.0, -2.0), (0, 0), (2.0, 2.0)]
    assert list(fig.data[1].y) == [2.4]


def test_tail_payload_matches_trace_order():
    bars = (1_761_091_200 + np.arange(3), {"a": np.array([100.0, 101.0, np.nan]), "b": np.array([10.0, 11.0, np.nan])})
    update = json.loads(to_json_plotly(figures.tail_payload("price", bars, PARAMS, 1_761_091_200)))
    assert [list(t) for t in update["traces"]] == [["y"], ["y"]]
    assert update["traces"][0]["y"] == [100.0, 101.0, None] and update["traces"][1]["y"] == [10.0, 11.0, None]
    assert update["x"] == ["2025-10-22T00:00:00", "2025-10-22T00:00:01", "2025-10-22T00:00:02"]
    assert update["keep_from"] == "2025-10-22T00:00:00"


def apply(figure: dict | None, update: dict) -> dict:
    """What assets/tick.js does with a chart update, in Python (the browser tests check the real
    one): take a whole figure, or splice a tail in at its first x and trim to the range."""
    if "figure" in update:
        return copy.deepcopy(update["figure"])
    for trace, columns in zip(figure["data"], update["traces"]):
        cut = bisect.bisect_left(trace["x"], update["x"][0])
        merged = list(trace["x"][:cut]) + update["x"]
        lo = bisect.bisect_left(merged, update["keep_from"])
        trace["x"] = merged[lo:]
        for name, values in columns.items():
            trace[name] = (list(trace[name][:cut]) + values)[lo:]
    for i, columns in update.get("replace", {}).items():
        figure["data"][int(i)].update(columns)
    return figure


def test_a_new_alert_reaches_the_z_chart_in_its_tail(tmp_path, clock):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)
    source = SimSource(seed=7, origin_s=int(clock()) - 3_600, span_s=3_600, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    update, cursor = chart("zscore", market, market.tick(), "5m", None, alert_id=market.alerts.last_id())
    fig = apply(None, update)
    clock.advance(1)
    snap = market.tick()
    second = snap.now_s - 30
    [alert] = market.alerts.add(
        [Alert(second, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "BTCUSDT/ETHUSDT", 2.5, 2.0, 2.5, 1.0)]
    )
    update, cursor = chart("zscore", market, snap, "5m", cursor, alert_id=alert.id)
    assert "figure" not in update, "a tail, not a whole figure"
    fig = apply(fig, update)
    assert fig["data"][1]["x"] == [pd.Timestamp(second, unit="s").strftime("%Y-%m-%dT%H:%M:%S")]
    assert fig["data"][1]["y"] == [2.5]


def whole(market, kind, range_name="5m"):
    return chart(kind, market, market.snapshot(), range_name, None)[0]["figure"]


def test_tails_rebuild_exactly_the_whole_chart_and_correct_late_ticks(tmp_path, clock):
    """Whole figure once, then a tail each tick: what the browser ends up holding equals a fresh
    whole render, including a bar drawn before its late tick landed. Changing the window (what
    the chart shows) sends a whole figure; so does a write older than the watermark, which is
    the only thing that restarts the analysis."""
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=7_200)
    source = SimSource(seed=7, origin_s=int(clock()) - 7_200, span_s=7_200, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    update, cursor = chart("spread", market, market.tick(), "5m", None)
    fig = apply(None, update)
    restarts = market.analyses.engine(market.snapshot().params).resets
    for step in (1, 1, 3, 1, 2, 1):
        clock.advance(step)
        update, cursor = chart("spread", market, market.tick(), "5m", cursor)
        assert "figure" not in update and len(update["x"]) <= chart_mod.TAIL_BARS + 3
        fig = apply(fig, update)
        drawn = int(clock()) - 1  # then a tick for a second already drawn lands, late
        market.store.add_ticks(
            [Tick("BTCUSDT", source.history("BTCUSDT", drawn, drawn)[0].price + 50.0, utc_from_epoch(drawn + 0.99))]
        )
    clock.advance(1)
    update, cursor = chart("spread", market, market.tick(), "5m", cursor)
    fig = apply(fig, update)
    assert market.analyses.engine(market.snapshot().params).resets == restarts, "late ticks never restart"
    full = whole(market, "spread")
    assert fig["data"][0]["x"] == full["data"][0]["x"] and len(fig["data"][0]["x"]) == 300
    for i in range(2):
        np.testing.assert_allclose(
            np.array(fig["data"][i]["y"], dtype=float), np.array(full["data"][i]["y"], dtype=float), rtol=1e-12
        )
    market.save_settings({"window": 30})
    update, cursor = chart("spread", market, market.tick(), "5m", cursor)
    assert update["figure"]["data"][1]["name"] == "mean (30)"
    clock.advance(1)
    snap = market.tick()
    past = int(clock()) - 120
    market.store.add_ticks([Tick("BTCUSDT", 1.0, utc_from_epoch(past + 0.9))])  # e.g. a backfilled hole
    update, _ = chart("spread", market, market.snapshot(), "5m", cursor)
    assert "figure" in update, "a write into the final past redraws the chart, not just its end"
    k = update["figure"]["data"][0]["x"].index(pd.Timestamp(past, unit="s").strftime("%Y-%m-%dT%H:%M:%S"))
    assert update["figure"]["data"][0]["y"][k] < 0, "the rewritten second is drawn"
    assert market.analyses.engine(snap.params).resets == 1, "and that restart is counted"


def test_every_hedge_method_has_a_label():
    from components.layout import HEDGE_LABELS
    from services.hedge import METHODS

    assert tuple(HEDGE_LABELS) == METHODS


def test_price_chart_shows_candles_of_the_timeframe(tmp_path, clock):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=7_200)
    source = SimSource(seed=7, origin_s=int(clock()) - 7_200, span_s=7_200, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    assert market.ohlc(market.tick(), 0, 10) is None, "1 s: lines, no candles"
    market.save_settings({"timeframe": "5m"})
    clock.advance(1)
    market.tick()
    fig = whole(market, "price", "15m")
    assert [t["type"] for t in fig["data"]] == ["candlestick", "candlestick"]
    now = int(clock())
    btc = [t.price for t in source.history("BTCUSDT", now // 300 * 300 - 300, now // 300 * 300 - 1)]
    c = fig["data"][0]
    k = c["x"].index(pd.Timestamp(now // 300 * 300 - 300, unit="s").strftime("%Y-%m-%dT%H:%M:%S"))
    assert (c["open"][k], c["high"][k], c["low"][k], c["close"][k]) == (btc[0], max(btc), min(btc), btc[-1])


def test_the_tick_table_is_sent_as_columns_newest_first_with_each_symbols_change():
    ticks = [  # newest first, as the store gives them
        Tick("BTCUSDT", 101.5, utc_from_epoch(1_761_091_200 + 1.5)),
        Tick("ETHUSDT", 10.0, utc_from_epoch(1_761_091_200 + 0.5)),
        Tick("BTCUSDT", 100.0, utc_from_epoch(1_761_091_200 + 0.5)),
    ]
    columns = tick_rows(ticks)["columns"]
    assert json.loads(to_json_plotly(columns)) == {
        "time_utc": ["2025-10-22T00:00:01.500Z", "2025-10-22T00:00:00.500Z", "2025-10-22T00:00:00.500Z"],
        "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT"],
        "price": [101.5, 10.0, 100.0],
        "change": [1.5, None, None],  # a symbol's first tick has no change
    }
