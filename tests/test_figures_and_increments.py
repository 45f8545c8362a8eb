"""Figure builders and the live-chart increment logic (no browser)."""
import json

import numpy as np
import pandas as pd
from cachelib import SimpleCache
from dash import no_update
from plotly.io.json import to_json_plotly

from components import figures
from pages._live import chart_update
from services.alerts import Alert
from services.market import MarketService
from services.engine import Params
from services.settings import AppConfig
from services.sources import SimSource, Tick, utc_from_epoch

PAIR = ("BTCUSDT", "ETHUSDT")
PARAMS = Params(PAIR, window=60)


def frame(n=5, start="2025-10-22T00:00:00Z"):
    idx = pd.date_range(start, periods=n, freq="s")
    vals = np.arange(n, dtype=float)
    vals[2] = np.nan
    return pd.DataFrame({"BTCUSDT": vals + 100, "ETHUSDT": vals + 10, "beta": vals, "alpha": vals, "spread": vals,
                         "mean": vals, "std": vals, "zscore": vals / 2}, index=idx.rename("timestamp_utc"))


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
    assert fig.layout.title.text == ("Spread ln BTCUSDT − (β·ln ETHUSDT + α) with its 30-bar mean · "
                                     "kalman hedge · log prices · 5m bars")
    assert figures.beta_figure(frame(), PARAMS).data[1].yaxis == "y2"


def test_long_series_use_webgl():
    assert figures.price_figure(frame(20_000), PAIR).data[0].type == "scattergl"
    assert figures.price_figure(frame(100), PAIR).data[0].type == "scatter"


def test_zscore_bands_and_alert_markers():
    second = int(pd.Timestamp("2025-10-22T00:00:03Z").timestamp())
    z_alert = Alert(second, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "BTCUSDT/ETHUSDT", 2.4, 2.0, 2.4, 1.0)
    price_alert = Alert(second, "BTCUSDT price above 1", "price_above:1:A:0:0", "price_above", "BTCUSDT/ETHUSDT",
                        101.0, 1.0, 0.5, 1.0)
    fig = figures.zscore_figure(frame(), PARAMS, 2.0, [z_alert, price_alert])
    levels = sorted((s.y0, s.y1) for s in fig.layout.shapes if s.type == "line")
    assert levels == [(-2.0, -2.0), (0, 0), (2.0, 2.0)]
    assert list(fig.data[1].y) == [2.4]


def test_extend_payload_matches_trace_order():
    payload = figures.extend_payload(frame(3), figures.trace_columns("price", PAIR), 900)
    update, traces, max_points = json.loads(to_json_plotly(payload))
    assert traces == [0, 1] and max_points == 900
    assert update["y"][0] == [100.0, 101.0, None] and update["y"][1] == [10.0, 11.0, None]
    assert update["x"][0] == ["2025-10-22T00:00:00", "2025-10-22T00:00:01", "2025-10-22T00:00:02"]


def test_increments_rebuild_exactly_the_full_chart(tmp_path, clock):
    """Whole figure once, then extendData each tick: what the browser ends up holding equals a
    fresh full render. Changing the window (the key) forces a full render."""
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=7_200)
    source = SimSource(seed=7, origin_s=int(clock()) - 7_200, span_s=7_200, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    market.refresh()
    fig, extend, state = chart_update("spread", market, "5m", None)
    assert extend is no_update
    x = list(fig.data[0].x)
    y = [list(t.y) for t in fig.data]
    for step in (1, 1, 3, 1, 2):
        clock.advance(step)
        market.refresh()
        fig2, extend, state = chart_update("spread", market, "5m", state)
        assert fig2 is no_update
        update, traces, max_points = extend
        assert len(update["x"][0]) == step
        x = (x + list(update["x"][0]))[-max_points:]
        y = [(y[i] + list(update["y"][i]))[-max_points:] for i in traces]
    assert chart_update("spread", market, "5m", state) == (no_update, no_update, no_update)
    full, _, _ = chart_update("spread", market, "5m", None)
    assert [str(v)[:19] for v in x] == [str(v)[:19].replace(" ", "T") for v in full.data[0].x]
    for i in range(2):
        # pandas' rolling sums depend on where the window sequence starts: equal to ~1e-16 relative
        np.testing.assert_allclose(np.array(y[i], dtype=float), np.array(full.data[i].y, dtype=float), rtol=1e-12)
    market.save_settings({"window": 30})
    fig3, extend, state = chart_update("spread", market, "5m", state)
    assert extend is no_update and fig3.data[1].name == "mean (30)"
    clock.advance(1)
    market.refresh()
    past = int(clock()) - 120
    market.store.add_ticks([Tick("BTCUSDT", 1.0, utc_from_epoch(past + 0.9))])  # e.g. a backfilled hole
    fig4, extend, _ = chart_update("spread", market, "5m", state)
    assert extend is no_update, "a write into the drawn past redraws the chart, not just its new end"
    k = [str(v)[:19] for v in fig4.data[0].x].index(str(np.datetime64(past, "s")))
    assert fig4.data[0].y[k] < 0, "the rewritten second is drawn"


def test_every_hedge_method_has_a_label():
    from components.layout import HEDGE_LABELS
    from services.hedge import METHODS

    assert tuple(HEDGE_LABELS) == METHODS


def test_price_chart_shows_candles_of_the_timeframe(tmp_path, clock):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=7_200)
    source = SimSource(seed=7, origin_s=int(clock()) - 7_200, span_s=7_200, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    market.refresh()
    assert market.ohlc(0, 10) is None, "1 s: lines, no candles"
    market.save_settings({"timeframe": "5m"})
    clock.advance(1)
    market.refresh()
    fig, _, _ = chart_update("price", market, "15m", None)
    assert [t.type for t in fig.data] == ["candlestick", "candlestick"]
    now = int(clock())
    btc = [t.price for t in source.history("BTCUSDT", now // 300 * 300 - 300, now // 300 * 300 - 1)]
    k = list(fig.data[0].x).index(np.datetime64((now // 300 * 300 - 300), "s"))
    c = fig.data[0]
    assert (c.open[k], c.high[k], c.low[k], c.close[k]) == (btc[0], max(btc), min(btc), btc[-1])
