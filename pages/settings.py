"""Settings: the pair, the alert threshold, the rolling window, the poll interval; the alert log."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html

from components import ids
from components.ids import Settings as ID
from components.layout import error_text, hedge_options, ok_text
from components.tables import ALERT_COLUMNS, grid
from services.bars import TIMEFRAMES
from services.market import current_market
from services.settings import POLL_RANGE, WINDOW_RANGE, SettingsError

dash.register_page(__name__, path="/settings", name="Settings", title="Settings · Pair Monitor", order=3)



def _field(label: str, control, help_text: str) -> dbc.Row:
    return dbc.Row([dbc.Label(label, width=4, html_for=control.id),
                    dbc.Col([control, dbc.FormText(help_text)], width=8)], className="mb-3")


def layout(**_kwargs):
    market = current_market()
    s = market.settings
    options = market.symbols()
    form = dbc.Card(dbc.CardBody([
        html.H5("Pair and alerts", className="card-title mb-3"),
        _field("Symbol A", dcc.Dropdown(id=ID.SYMBOL_A, options=options, value=s.symbol_a, clearable=False),
               "The leg whose price comes first in the spread."),
        _field("Symbol B", dcc.Dropdown(id=ID.SYMBOL_B, options=options, value=s.symbol_b, clearable=False),
               "spread = A − B (β = 1). Must differ from A."),
        _field("z threshold", dbc.Input(id=ID.THRESHOLD, type="number", value=s.threshold, step="any"),
               "An alert fires when |z| crosses this level from inside. Greater than 0."),
        _field("Rolling window", dbc.Input(id=ID.WINDOW, type="number", value=s.window, step=1),
               f"Buckets (seconds) in the rolling mean and std, {WINDOW_RANGE[0]}–{WINDOW_RANGE[1]}."),
        _field("Hedge method", dbc.Select(id=ID.HEDGE, options=hedge_options(), value=s.hedge),
               "β and α of spread = A − (β·B + α); also on the Spread & z-score page."),
        _field("Timeframe", dbc.Select(id=ID.TIMEFRAME, options=list(TIMEFRAMES), value=s.timeframe),
               "Bars the z-score, its window and the alerts count in."),
        _field("Log prices", dbc.Switch(id=ID.LOG, value=s.log_prices, label="hedge and spread on ln prices"), ""),
        _field("Poll interval (s)", dbc.Input(id=ID.POLL, type="number", value=s.poll_interval_s, step="any"),
               f"How often prices are fetched, {POLL_RANGE[0]}–{POLL_RANGE[1]} s."),
        html.Div([dbc.Button("Save", id=ID.SAVE, color="primary", className="me-3"), html.Div(id=ID.SAVE_MSG)],
                 className="d-flex align-items-center"),
    ]), className="mb-3")
    log = dbc.Card(dbc.CardBody([
        html.Div([html.H5("Alert log, newest first", className="card-title mb-0"),
                  dbc.Button("Clear", id=ID.CLEAR_ALERTS, color="danger", outline=True, size="sm")],
                 className="d-flex justify-content-between align-items-center mb-2"),
        html.Div(id=ID.CLEAR_MSG),
        grid(ID.ALERT_LOG, ALERT_COLUMNS, "No alerts yet", height=420),
    ]), className="mb-3")
    return dbc.Container(dbc.Row([dbc.Col(form, lg=5), dbc.Col(log, lg=7)], className="g-3"), fluid=True)


@callback(
    Output(ID.SAVE_MSG, "children"),
    Input(ID.SAVE, "n_clicks"),
    State(ID.SYMBOL_A, "value"), State(ID.SYMBOL_B, "value"), State(ID.THRESHOLD, "value"), State(ID.WINDOW, "value"),
    State(ID.POLL, "value"), State(ID.HEDGE, "value"), State(ID.TIMEFRAME, "value"), State(ID.LOG, "value"),
    prevent_initial_call=True,
)
def save(_n, a, b, threshold, window, poll, hedge, timeframe, log):
    try:
        saved = current_market().save_settings({"symbol_a": a, "symbol_b": b, "threshold": threshold,
                                                 "window": window, "poll_interval_s": poll, "hedge": hedge,
                                                 "timeframe": timeframe, "log_prices": log})
    except SettingsError as exc:
        return error_text(f"Not saved: {exc}")
    return ok_text(f"Saved: {saved.pair_label}, |z| ≥ {saved.threshold:g}, window {saved.window} × "
                   f"{saved.timeframe}, {saved.hedge} hedge, poll {saved.poll_interval_s:g} s. "
                   "Applies to every page and tab.")


@callback(Output(ID.ALERT_LOG, "rowData"), Input(ids.INTERVAL, "n_intervals"), Input(ID.CLEAR_MSG, "children"))
def update_alert_log(_n, _cleared):
    market = current_market()
    market.refresh()
    return [a.as_row() for a in market.alerts.log()]


@callback(Output(ID.CLEAR_MSG, "children"), Input(ID.CLEAR_ALERTS, "n_clicks"), prevent_initial_call=True)
def clear_alerts(_n):
    current_market().alerts.clear()
    return ok_text("Alert log cleared.")
