"""Long ranges are drawn with at most about 2,000 points per trace: spikes, gaps and alert
markers stay visible, every drawn point is a real bar's value, and a zoom window is exact."""

import json

import numpy as np
import pandas as pd
import pytest
from cachelib import SimpleCache
from plotly.io.json import to_json_plotly

from pages._tick import chart, zoom_window
from services.alerts import Alert
from services.downsample import MAX_POINTS, rows_to_draw
from services.market import MarketService
from services.settings import AppConfig
from services.sources import SimSource


def test_rows_keep_spikes_gaps_and_the_rows_that_must_stay():
    rng = np.random.default_rng(0)
    y = rng.normal(size=86_400).cumsum()
    y[50_000] += 500.0  # a one-second spike
    y[20_000:20_300] = np.nan  # a five-minute gap
    rows = rows_to_draw([y, -2 * y], must=[12_345])
    assert len(rows) <= MAX_POINTS and (np.diff(rows) > 0).all()
    assert 50_000 in rows and 12_345 in rows and {0, 86_399} <= set(rows)
    assert np.isnan(y[rows]).any(), "the gap is still a break in the line"
    assert rows_to_draw([y[:1_500]]) is None, "a short range is drawn whole"


def test_a_zoom_window_is_drawn_at_full_resolution():
    y = np.random.default_rng(1).normal(size=86_400).cumsum()
    rows = rows_to_draw([y], dense=slice(40_000, 41_200))
    assert set(range(40_000, 41_200)) <= set(rows) and len(rows) <= 2 * MAX_POINTS + 4


@pytest.fixture
def day(tmp_path, clock):
    """A market with 24 h of 1 s history."""
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=86_400)
    source = SimSource(seed=7, origin_s=int(clock()) - 86_400, span_s=86_400, clock=clock)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=source)
    now = int(clock())
    for sym in ("BTCUSDT", "ETHUSDT"):
        market.store.add_ticks(source.history(sym, now - 86_400, now), raw=False)
    market.tick()
    return market


def test_the_24h_view_is_small_and_every_point_is_the_apis(day):
    snap = day.snapshot()
    second = snap.now_s - 50_000
    z = float(day.frame(snap, second, second)["zscore"].iloc[0])
    day.alerts.add([Alert(second, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "BTCUSDT/ETHUSDT", z, 2.0, z, 1.0)])
    api = day.frame(snap, snap.now_s - 86_399, snap.now_s)
    for kind in ("price", "spread", "zscore", "beta"):
        update, _ = chart(kind, day, snap, "24h", None, alert_id=1)
        text = to_json_plotly(update)
        assert len(text) <= 200_000, f"{kind}: {len(text):,} bytes"
        fig = json.loads(text)["figure"]
        for trace, column in zip(
            fig["data"],
            {
                "price": ["BTCUSDT", "ETHUSDT"],
                "spread": ["spread", "mean"],
                "zscore": ["zscore"],
                "beta": ["beta", "alpha"],
            }[kind],
        ):
            assert len(trace["x"]) <= MAX_POINTS
            at = pd.to_datetime(trace["x"], utc=True)
            expected = api[column].reindex(at).to_numpy(dtype=float)
            np.testing.assert_allclose(np.array(trace["y"], dtype=float), expected, rtol=1e-12, equal_nan=True)
        if kind == "zscore":
            marker = pd.Timestamp(second, unit="s").strftime("%Y-%m-%dT%H:%M:%S")
            assert fig["data"][1]["x"] == [marker] and marker in fig["data"][0]["x"], "the alert stays on the line"


def test_zooming_redraws_the_window_exactly_and_bad_zooms_are_ignored(day):
    snap = day.snapshot()
    x0, x1 = snap.now_s - 30_000, snap.now_s - 29_000
    iso = [pd.Timestamp(x, unit="s").strftime("%Y-%m-%d %H:%M:%S.%f") for x in (x0, x1)]
    _, cursor = chart("zscore", day, snap, "24h", None)
    update, zoomed = chart("zscore", day, snap, "24h", cursor, zoom=iso)
    assert "figure" in update and zoomed["key"] != cursor["key"]
    xs = set(update["figure"]["data"][0]["x"])
    assert {pd.Timestamp(s, unit="s").strftime("%Y-%m-%dT%H:%M:%S") for s in range(x0, x1 + 1)} <= xs
    for bad in (["yesterday", "now"], [1], "abc", [None, None], [x1, x1]):
        assert zoom_window(bad, snap.now_s - 86_399, snap.now_s) is None
        update, c = chart("zscore", day, snap, "24h", cursor, zoom=bad)
        assert c["key"] == cursor["key"], "a zoom that is not a window changes nothing"
