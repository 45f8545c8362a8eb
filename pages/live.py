"""Live ticks: a card per symbol, both prices on one chart, the raw tick table."""
from __future__ import annotations


import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, html

from components import ids
from components.ids import Live as ID
from components.layout import chart_card, range_picker, stat_card
from components.tables import TICK_COLUMNS, grid, tick_rows
from pages._live import register_live_chart
from services.market import current_market
from services.sources import iso_utc

dash.register_page(__name__, path="/", name="Live ticks", title="Live ticks · Pair Monitor", order=0)

TICK_ROWS = 60


def _symbol_card(i: int) -> dbc.Col:
    return dbc.Col(stat_card("", ID.CARD_PRICE[i], ID.CARD_SUB[i], label_id=ID.CARD_TITLE[i]), md=6, lg=3)


def layout(**_kwargs):
    return dbc.Container([
        dbc.Row([_symbol_card(0), _symbol_card(1),
                 dbc.Col(range_picker(ID.RANGE), className="d-flex align-items-end justify-content-lg-end")],
                className="g-3 mb-3"),
        chart_card(ID.PRICE_GRAPH, ID.PRICE_STATE),
        dbc.Card(dbc.CardBody([html.H6("Ticks, newest first", className="card-title"),
                               grid(ID.TICKS, TICK_COLUMNS, "Waiting for the first tick", height=380)]), className="mb-3"),
    ], fluid=True)


def _card(symbol: str, leg: dict | None):
    """Title, price and subtitle of a symbol's card; a stale price is marked, never shown as live."""
    if leg is None:
        return symbol, "–", "no tick yet"
    last, first = leg["last"], leg["first_price"]
    change = "" if first is None else (
        f"Δ {last.price - first:+,.8g} ({(last.price / first - 1) * 100:+.3f} %) over {leg['window_s']} s · ")
    price = f"{last.price:,.8g}"
    if leg["stale"]:
        price = html.Span([html.Span(price, className="text-muted"),
                           dbc.Badge(f"STALE {leg['age_s']:,.0f} s", color="danger", className="ms-2 fs-6 align-middle")])
    return symbol, price, change + f"last tick {iso_utc(last.time)}"


@callback(
    Output(ID.CARD_TITLE[0], "children"), Output(ID.CARD_PRICE[0], "children"), Output(ID.CARD_SUB[0], "children"),
    Output(ID.CARD_TITLE[1], "children"), Output(ID.CARD_PRICE[1], "children"), Output(ID.CARD_SUB[1], "children"),
    Output(ID.TICKS, "rowData"),
    Input(ids.INTERVAL, "n_intervals"),
)
def update_cards(_n):
    market = current_market()
    market.refresh()
    cards = [v for s in market.settings.pair for v in _card(s, market.leg_summary(s))]
    return *cards, tick_rows(market.recent_ticks(TICK_ROWS))


register_live_chart("price", ID.PRICE_GRAPH, ID.PRICE_STATE, ID.RANGE)
