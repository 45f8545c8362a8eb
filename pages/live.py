"""Live ticks: a card per symbol, both prices on one chart, the raw tick table. With a streaming
source the cards' prices are also pushed as they trade, between the page's ticks."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import html

from components import ids
from components.ids import Live as ID
from components.layout import chart_card, range_picker, stat_card
from components.tables import TICK_COLUMNS, table_card, tick_rows
from pages._tick import chart, cursor_store, key, register_push, register_view
from services.sources import iso_utc

PATH = "/live"
dash.register_page(__name__, path=PATH, name="Live ticks", title="Live ticks · Pair Monitor", order=1)

TICK_ROWS = 60


def _symbol_card(i: int) -> dbc.Col:
    return dbc.Col(stat_card("", ID.CARD_PRICE[i], ID.CARD_SUB[i], label_id=ID.CARD_TITLE[i]), md=6, lg=3)


def layout(**_kwargs):
    return dbc.Container(
        [
            dbc.Row(
                [
                    _symbol_card(0),
                    _symbol_card(1),
                    dbc.Col(range_picker(ids.RANGE), className="d-flex align-items-end justify-content-lg-end"),
                ],
                className="g-3 mb-3",
            ),
            chart_card(ID.PRICE_GRAPH),
            cursor_store(PATH),
            table_card("Ticks, newest first", ID.TICKS, TICK_COLUMNS, "Waiting for the first tick", height=380),
        ],
        fluid=True,
    )


def _card(symbol: str, leg: dict | None):
    """Title, price and subtitle of a symbol's card; a stale price is marked, never shown as live."""
    if leg is None:
        return symbol, "–", "no tick yet"
    last, first = leg["last"], leg["first_price"]
    change = (
        ""
        if first is None
        else (f"Δ {last.price - first:+,.8g} ({(last.price / first - 1) * 100:+.3f} %) over {leg['window_s']} s · ")
    )
    price = f"{last.price:,.8g}"
    if leg["stale"]:
        price = html.Span(
            [
                html.Span(price, className="text-muted"),
                dbc.Badge(f"STALE {leg['age_s']:,.0f} s", color="danger", className="ms-2 fs-6 align-middle"),
            ]
        )
    return symbol, price, change + f"last tick {iso_utc(last.time)}"


CARDS = [
    (component, "children") for i in range(2) for component in (ID.CARD_TITLE[i], ID.CARD_PRICE[i], ID.CARD_SUB[i])
]


def cards(market, snap) -> tuple[dict, dict]:
    """The cards' values, and for each live price (not a stale one) the time of its tick."""
    values, stamps = {}, {}
    for i, symbol in enumerate(snap.settings.pair):
        leg = market.leg_summary(snap, symbol)
        shown = [key(*c) for c in CARDS[3 * i : 3 * i + 3]]  # title, price, subtitle
        values.update(zip(shown, _card(symbol, leg)))
        if leg is not None and not leg["stale"]:
            stamps[shown[1]] = stamps[shown[2]] = iso_utc(leg["last"].time)
    return values, stamps


def pushed(market, snap) -> tuple[dict, dict]:
    """The live prices, pushed as they trade (a stale card waits for the tick, which marks it)."""
    values, stamps = cards(market, snap)
    return {k: values[k] for k in stamps}, stamps


def build(market, snap, view, cursor):
    """Cards every tick; the tick table when a new tick came in; the price chart's update."""
    shown, stamps = market.shared(  # the same for every tab until the next tick
        ("live-cards", snap.params, snap.now_s, snap.ticks), lambda: cards(market, snap)
    )
    values = {**shown, "stamps": stamps}

    def table():
        ticks = market.recent_ticks(snap, TICK_ROWS)
        return (iso_utc(ticks[0].time) if ticks else None), tick_rows(ticks)

    newest, rows = market.shared(("tick-rows", snap.settings.pair, snap.ticks), table)  # once per new tick
    if newest != cursor.get("ticks"):
        values[key(ID.TICKS, "rowData")] = rows
    values[key(ID.PRICE_GRAPH, "figure")], price = chart(
        "price", market, snap, view.get("range"), cursor.get(ID.PRICE_GRAPH), zoom=view["zoom"].get(ID.PRICE_GRAPH)
    )
    return values, {"ticks": newest, ID.PRICE_GRAPH: price}


register_view(PATH, [*CARDS, (ID.TICKS, "rowData"), (ID.PRICE_GRAPH, "figure")], build)
register_push(PATH, pushed)
