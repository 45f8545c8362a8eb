"""One round trip per tab per tick: the page views the app's tick callback fills.

Each page registers a `PageView`: the outputs its clientside callback sets (cards, tables,
figures) and a `build` function that, given that tick's snapshot and the page's cursor (what it
has applied), returns the values that changed and the cursor once they are applied. The browser
writes that cursor (`cursor_store`) only when it has applied them, so a payload that came in
before the page had rendered, or a tail that found no chart, is sent whole again. The app's
single tick callback (app.py) calls the open page's `build` after the one refresh of that tick and
sends everything in one payload; `assets/tick.js` applies it in the browser.

Charts are drawn whole once, then get tails: every bar from the first one that was still
provisional (inside the lateness window) when the tab last looked, so a bar drawn before its late
tick landed is corrected, and a closed bar on screen always equals `/api/analytics.csv`. Tails
and whole figures depend only on what is shown and the second, not on the tab, so they are
computed once for every tab (`MarketService.shared`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from dash import Input, Output, State, clientside_callback, dcc

from components import figures, ids
from components.layout import DEFAULT_RANGE, RANGES
from services.bars import bar_open
from services.downsample import MAX_POINTS, rows_to_draw
from services.market import MarketService, Snapshot

MIN_BARS = 100  # with 1m+ bars a chart shows at least this many, whatever the range picked
TAIL_BARS = 5  # a tab that fell this many bars behind still gets the shared tail
REDRAW_EVERY_S = 300  # a downsampled chart is redrawn whole this often (tails add full-resolution bars)


@dataclass(frozen=True)
class PageView:
    path: str
    outputs: tuple[tuple[str, str], ...]
    build: Callable[[MarketService, Snapshot, dict, dict], tuple[dict, dict]]


VIEWS: dict[str, PageView] = {}
PUSHES: dict[str, Callable[[MarketService, Snapshot], tuple[dict, dict]]] = {}


def key(component_id: str, prop: str) -> str:
    return f"{component_id}.{prop}"


def register_view(path: str, outputs, build) -> None:
    """Register a page's view: `build(market, snap, view, cursor) -> (values, cursor)`, where
    `view` holds the page's view controls ({name: value}, and "zoom": {graph id: [x0, x1]}) and
    `values` maps "id.prop" (one of `outputs`) to its new value; outputs left out keep what they
    show. A table's "rowData" may be sent as {"columns": {field: numpy array}}, and children as
    {"render": name, "data": plain data} (window.pairmonitorRender[name] makes the components):
    one cheap encoding per tab, where component trees cost a call per property."""
    outputs = tuple(outputs)
    VIEWS[path] = PageView(path, outputs, build)
    spec = json.dumps({"path": path, "outputs": [key(i, p) for i, p in outputs]})
    graphs = [i for i, p in outputs if p == "figure"]
    clientside_callback(  # also on the page's first render: a tick may have come in before it
        f"function (tick, ...figures) {{ return window.pairmonitorTick.apply({spec}, tick, figures); }}",
        [*(Output(i, p) for i, p in outputs), Output(ids.cursor(path), "data")],
        Input(ids.TICK, "data"),
        [State(g, "figure") for g in graphs],
    )
    for graph in graphs:
        clientside_callback(
            "function (relayout) { return window.pairmonitorTick.zoom(relayout); }",
            Output(ids.zoom(graph), "data"),
            Input(graph, "relayoutData"),
            prevent_initial_call=True,
        )


def register_push(path: str, pushed) -> None:
    """Values of a page that are pushed to it as soon as the store has a new tick, between its
    ticks (`GET /api/push?page=path`, server-sent events; assets/push.js sets them):
    `pushed(market, snap) -> (values, stamps)`, `values` as a view's, and `stamps` the time of
    the tick each value shows (ISO UTC). The view's build sends the same stamps with its values
    (under "stamps"), so the tick never puts back an older value than the push has shown."""
    PUSHES[path] = pushed


def cursor_store(path: str) -> dcc.Store:
    """Put in a page's layout: what the page has applied, for the tick to send only what is new."""
    return dcc.Store(id=ids.cursor(path))


def range_seconds(range_name, tf_s: int) -> int:
    name = range_name if isinstance(range_name, str) else DEFAULT_RANGE  # a crafted request may send anything
    return max(RANGES.get(name, RANGES[DEFAULT_RANGE]), MIN_BARS * tf_s)


def zoom_window(zoom, start_s: int, end_s: int) -> list[int] | None:
    """A chart's zoomed x window as UTC seconds inside [start_s, end_s]; None for no zoom, and
    for anything that is not two times (the store can be set by hand)."""
    try:
        x0, x1 = (int(pd.Timestamp(str(x)).timestamp()) for x in zoom)
    except (TypeError, ValueError):
        return None
    lo, hi = max(min(x0, x1), start_s), min(max(x0, x1), end_s)
    return [lo, hi] if lo < hi else None


def chart(
    kind: str, market: MarketService, snap: Snapshot, range_name, cursor: dict | None, alert_id: int = 0, zoom=None
) -> tuple[dict, dict]:
    """(update, cursor) for one live chart: a whole figure when the tab has none or holds
    something else (other parameters, range, threshold, zoom window, a rewritten past, a
    downsampled chart's periodic redraw), else the tail from the first bar that was provisional
    when it last looked, with the z chart's alert markers (`alert_id`, the newest alert, keys the
    shared memo, so a new alert shows at once)."""
    params, settings = snap.params, snap.settings
    tf = params.tf_s
    range_s = range_seconds(range_name, tf)
    end_s = snap.now_s
    start_s = end_s - range_s + 1
    window = zoom_window(zoom, start_s, end_s) if zoom else None
    downsampled = range_s // tf > MAX_POINTS
    final = market.final_until(snap)
    shows = [
        kind,
        *params.pair,
        params.tf,
        params.hedge,
        params.window,
        params.log,
        settings.threshold,
        range_s,
        market.revision(snap),
        window,
        end_s // REDRAW_EVERY_S if downsampled else 0,
    ]
    new_cursor = {"key": shows, "final": final}
    tail_from = final + tf - TAIL_BARS * tf
    held = cursor.get("final") if isinstance(cursor, dict) else None  # a crafted request may send anything
    if isinstance(held, int) and cursor.get("key") == shows and tail_from - tf <= held <= final:

        def tail():
            first = max(tail_from, bar_open(start_s, tf))
            ohlc = market.ohlc(snap, first, end_s) if kind == "price" else None
            alerts = market.alert_marks(snap, range_s, start_s) if kind == "zscore" else None
            return figures.tail_payload(kind, market.arrays(snap, first, end_s), params, start_s, ohlc, alerts)

        return market.shared(("tail", json.dumps(shows), end_s, snap.seq, alert_id), tail), new_cursor

    def whole():
        df = market.frame(snap, start_s, end_s)
        ohlc = market.ohlc(snap, start_s, end_s) if kind == "price" else None
        alerts = market.alert_marks(snap, range_s, start_s) if kind == "zscore" else []
        marked = df.index.get_indexer(pd.to_datetime([a.second for a in alerts if a.is_z], unit="s", utc=True))
        dense = None if window is None else slice(*df.index.searchsorted(pd.to_datetime(window, unit="s", utc=True)))
        columns = [df[c].to_numpy() for c in figures.trace_columns(kind, params.pair)]
        rows = rows_to_draw(columns, must=marked[marked >= 0], dense=dense)
        if rows is not None:
            df = df.iloc[rows]
            ohlc = None if ohlc is None else ohlc.iloc[rows]
        return {"figure": figures.chart_figure(kind, df, params, settings.threshold, alerts, ohlc).to_plotly_json()}

    return market.shared(("whole", json.dumps(shows), end_s, snap.seq, alert_id), whole), new_cursor
