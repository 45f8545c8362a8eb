"""One round trip per tab per tick: the page views the app's tick callback fills.

Each page registers a `PageView`: the outputs its clientside callback sets (cards, tables,
figures) and a `build` function that, given that tick's snapshot, returns the values that changed
and the tab's new cursor (what it now holds). The app's single tick callback (app.py) calls the
open page's `build` after the one refresh of that tick and sends everything in one payload;
`assets/tick.js` applies it in the browser.

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

from dash import Input, Output, State, clientside_callback

from components import figures, ids
from components.layout import DEFAULT_RANGE, RANGES
from services.bars import bar_open
from services.market import MarketService, Snapshot

MIN_BARS = 100  # with 1m+ bars a chart shows at least this many, whatever the range picked
TAIL_BARS = 5  # a tab that fell this many bars behind still gets the shared tail


@dataclass(frozen=True)
class PageView:
    path: str
    outputs: tuple[tuple[str, str], ...]
    build: Callable[[MarketService, Snapshot, dict, dict], tuple[dict, dict]]


VIEWS: dict[str, PageView] = {}


def key(component_id: str, prop: str) -> str:
    return f"{component_id}.{prop}"


def register_view(path: str, outputs, build) -> None:
    """Register a page's view: `build(market, snap, view, cursor) -> (values, cursor)`, where
    `view` holds the page's view controls ({name: value}) and `values` maps "id.prop" (one of
    `outputs`) to its new value; outputs left out keep what they show."""
    outputs = tuple(outputs)
    VIEWS[path] = PageView(path, outputs, build)
    spec = json.dumps({"path": path, "outputs": [key(i, p) for i, p in outputs]})
    graphs = [i for i, p in outputs if p == "figure"]
    clientside_callback(
        f"function (tick, ...figures) {{ return window.pairmonitorTick.apply({spec}, tick, figures); }}",
        [Output(i, p) for i, p in outputs],
        Input(ids.TICK, "data"),
        [State(g, "figure") for g in graphs],
        prevent_initial_call=True,
    )


def range_seconds(range_name, tf_s: int) -> int:
    return max(RANGES.get(range_name or "", RANGES[DEFAULT_RANGE]), MIN_BARS * tf_s)


def chart(
    kind: str, market: MarketService, snap: Snapshot, range_name, cursor: dict | None, alert_id: int = 0
) -> tuple[dict, dict]:
    """(update, cursor) for one live chart: a whole figure when the tab has none or holds
    something else (other parameters, range, threshold, a rewritten past, a new alert marker),
    else the tail from the first bar that was provisional when it last looked."""
    params, settings = snap.params, snap.settings
    tf = params.tf_s
    range_s = range_seconds(range_name, tf)
    end_s = snap.now_s
    start_s = end_s - range_s + 1
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
        alert_id,
    ]
    new_cursor = {"key": shows, "final": final}
    tail_from = final + tf - TAIL_BARS * tf
    if cursor and cursor.get("key") == shows and tail_from - tf <= cursor.get("final", -1) <= final:

        def tail():
            first = max(tail_from, bar_open(start_s, tf))
            ohlc = market.ohlc(snap, first, end_s) if kind == "price" else None
            return figures.tail_payload(kind, market.frame(snap, first, end_s), params, start_s, ohlc)

        return market.shared(("tail", *map(str, shows), end_s, snap.seq), tail), new_cursor

    def whole():
        df = market.frame(snap, start_s, end_s)
        ohlc = market.ohlc(snap, start_s, end_s) if kind == "price" else None
        alerts = market.alerts.log(settings.pair_label, since_s=start_s) if kind == "zscore" else []
        return {"figure": figures.chart_figure(kind, df, params, settings.threshold, alerts, ohlc).to_plotly_json()}

    return market.shared(("whole", *map(str, shows), end_s, snap.seq), whole), new_cursor
