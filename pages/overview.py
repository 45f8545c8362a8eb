"""The book: every watched pair on one screen, the stretched spreads first if asked; a row
opens that pair's Spread & z-score page."""

from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
from dash import html

from components.book import SPARK_EVERY_S, SPARK_S, header, row_view, spark_points, sparkline
from components.ids import Overview as ID
from components.layout import button_group
from pages._tick import cursor_store, key, register_view

PATH = "/"
dash.register_page(__name__, path=PATH, name="Overview", title="Overview · Pair Monitor", order=0)

SORTS = {"watchlist": "Watchlist order", "|z|": "|z|, largest first"}


def layout(**_kwargs):
    return dbc.Container(
        [
            html.Div(
                [
                    html.H5(id=ID.COUNT, className="mb-0 me-auto"),
                    html.Span("Sort", className="me-2 text-muted small"),
                    button_group(ID.SORT, SORTS, "watchlist", "sort-picker"),
                ],
                className="d-flex align-items-center flex-wrap gap-2 mb-3",
            ),
            html.Div([header(), html.Div(id=ID.ROWS)], className="book"),
            cursor_store(PATH),
        ],
        fluid=True,
    )


def _spark(market, snap, settings) -> str:
    """The last hour of a pair's z on an hour-wide axis, redrawn every SPARK_EVERY_S, for every
    tab."""
    params = market.params(settings)
    end = snap.now_s // SPARK_EVERY_S * SPARK_EVERY_S

    def draw():
        frame = market.frame(snap, end - SPARK_S + 1, end, params)
        return sparkline(
            spark_points(frame.index.asi8 // 1_000_000_000, frame["zscore"].to_numpy(), end, params.tf_s),
            settings.threshold,
        )

    return market.shared(("spark", params, settings.threshold, end), draw)


def build(market, snap, view, _cursor):
    """Every pair's row, each tick (prices and z move every second), computed once a second for
    every tab."""
    asked = view.get("sort")
    order = asked if isinstance(asked, str) and asked in SORTS else "watchlist"  # a crafted request may send anything

    def rows():
        pairs = market.pair_rows(snap)
        if order == "|z|":
            pairs = sorted(pairs, key=lambda p: -abs(p[1]["zscore"]) if p[1]["zscore"] is not None else math.inf)
        return [row_view(r, _spark(market, snap, s) if r["zscore"] is not None else "") for s, r in pairs]

    shown = market.shared(("book", order, snap.now_s, snap.seq), rows)
    count = f"Watchlist · {len(shown)} pair{'s' if len(shown) != 1 else ''}"
    return {key(ID.ROWS, "children"): {"render": "book", "data": shown}, key(ID.COUNT, "children"): count}, {}


register_view(PATH, [(ID.ROWS, "children"), (ID.COUNT, "children")], build)
