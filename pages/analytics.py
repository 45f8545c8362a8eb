"""Spread & z-score: spread with its rolling mean, z with ±threshold bands and alert markers."""
from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, html

from components import ids
from components.ids import Analytics as ID
from components.layout import chart_card, error_text, ok_text, range_picker, stat_card
from pages._live import chart_update
from services.market import current_market
from services.settings import SettingsError

dash.register_page(__name__, path="/analytics", name="Spread & z-score", title="Spread & z-score · Pair Monitor",
                   order=1)



def layout(**_kwargs):
    settings = current_market().settings
    stats = [stat_card("z-score", ID.STAT_Z, ID.STAT_Z_SUB), stat_card("Spread", ID.STAT_SPREAD),
             stat_card("Rolling mean", ID.STAT_MEAN), stat_card("Rolling std", ID.STAT_STD),
             stat_card("Alerts (this pair)", ID.STAT_ALERTS)]
    window_form = dbc.InputGroup([
        dbc.InputGroupText("Window (buckets)"),
        dbc.Input(id=ID.WINDOW, type="number", value=settings.window, step=1,
                  debounce=True, style={"maxWidth": "110px"}),
        dbc.Button("Apply", id=ID.WINDOW_APPLY, color="primary"),
    ], size="sm", style={"width": "auto"})
    return dbc.Container([
        dbc.Row([dbc.Col(s) for s in stats], className="g-3 mb-3"),
        dbc.Row([
            dbc.Col(window_form, width="auto"),
            dbc.Col(html.Div(id=ID.WINDOW_MSG), width="auto"),
            dbc.Col(range_picker(ID.RANGE), className="d-flex justify-content-end"),
        ], className="g-3 mb-3 align-items-center"),
        chart_card(ID.SPREAD_GRAPH, ID.SPREAD_STATE),
        chart_card(ID.Z_GRAPH, ID.Z_STATE),
    ], fluid=True)


def _fmt(x: float, spec: str = ",.6g") -> str:
    return "–" if x is None or math.isnan(x) else format(x, spec)


@callback(
    Output(ID.STAT_Z, "children"), Output(ID.STAT_Z_SUB, "children"), Output(ID.STAT_SPREAD, "children"),
    Output(ID.STAT_MEAN, "children"), Output(ID.STAT_STD, "children"), Output(ID.STAT_ALERTS, "children"),
    Input(ids.INTERVAL, "n_intervals"),
)
def update_stats(_n):
    market = current_market()
    market.refresh()
    settings = market.settings
    row = market.latest()
    z = row["zscore"]
    status = market.status()
    if status["status"] == "stale":
        where = f"no fresh data for {status['age_s']:,.0f} s"
    elif math.isnan(z):
        where = f"undefined until {settings.window} buckets are filled"
    else:
        where = "outside the band" if abs(z) >= settings.threshold else "inside the band"
    return (_fmt(z, "+.3f"), f"threshold ±{settings.threshold:g} · {where}", _fmt(row["spread"]),
            _fmt(row["mean"]), _fmt(row["std"]), str(len(market.alerts.log(settings.pair_label))))


@callback(
    Output(ID.SPREAD_GRAPH, "figure"), Output(ID.SPREAD_GRAPH, "extendData"), Output(ID.SPREAD_STATE, "data"),
    Input(ids.INTERVAL, "n_intervals"), Input(ID.RANGE, "value"),
    State(ID.SPREAD_STATE, "data"),
)
def update_spread_chart(_n, range_name, state):
    market = current_market()
    market.refresh()
    return chart_update("spread", market, range_name, state)


@callback(
    Output(ID.Z_GRAPH, "figure"), Output(ID.Z_GRAPH, "extendData"), Output(ID.Z_STATE, "data"),
    Input(ids.INTERVAL, "n_intervals"), Input(ID.RANGE, "value"),
    State(ID.Z_STATE, "data"),
)
def update_z_chart(_n, range_name, state):
    market = current_market()
    market.refresh()
    return chart_update("zscore", market, range_name, state)


@callback(
    Output(ID.WINDOW_MSG, "children"),
    Input(ID.WINDOW_APPLY, "n_clicks"), Input(ID.WINDOW, "n_submit"),
    State(ID.WINDOW, "value"),
    prevent_initial_call=True,
)
def apply_window(_clicks, _submit, value):
    try:
        saved = current_market().save_settings({"window": value})
    except SettingsError as exc:
        return error_text(str(exc))
    return ok_text(f"Window set to {saved.window} buckets for every page and tab.")
