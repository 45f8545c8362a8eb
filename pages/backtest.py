"""Backtest: the z-score mean-reversion strategy over the recorded history, with costs."""

from __future__ import annotations

import math
from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html, no_update

from components import figures
from components.ids import Backtest as ID
from components.layout import chart_card, error_text, stat_card
from components.tables import TRADE_COLUMNS, table_card, trade_rows
from services.backtest import BacktestParams, parse_params
from services.market import current_market
from services.settings import SettingsError, pair_in

dash.register_page(__name__, path="/backtest", name="Backtest", title="Backtest · Pair Monitor", order=3)

RERUN_MS = 15_000


def _number(component_id, label, value, help_text):
    return dbc.Col(
        html.Div(
            dbc.InputGroup(
                [
                    dbc.InputGroupText(label),
                    dbc.Input(
                        id=component_id,
                        type="number",
                        value=value,
                        step="any",
                        debounce=True,
                        style={"maxWidth": "90px"},
                    ),
                ],
                size="sm",
            ),
            title=help_text,
        ),
        width="auto",
    )


def layout(pair=None, **_kwargs):
    threshold = current_market().settings_for(pair_in(pair)).threshold
    d = BacktestParams()
    controls = dbc.Row(
        [
            _number(ID.ENTRY, "Entry |z|", threshold, "enter when z crosses ±entry (default: the alert threshold)"),
            _number(ID.EXIT, "Exit z", d.exit_level, "leave when z comes back to this level"),
            _number(ID.STOP, "Stop |z|", d.stop, "leave when |z| runs past this (empty: no stop)"),
            _number(ID.COST, "Cost bp/leg", d.cost_bps, "basis points of each leg's notional, per fill"),
            dbc.Col(html.A("Trades CSV", id=ID.CSV_LINK, className="btn btn-sm btn-outline-info"), width="auto"),
            dbc.Col(html.Div(id=ID.MSG), width="auto"),
        ],
        className="g-3 mb-3 align-items-center",
    )
    labels = ("Total return", "Sharpe (annualised)", "Max drawdown", "Hit rate", "Trades")
    return dbc.Container(
        [
            dcc.Interval(id=ID.TIMER, interval=RERUN_MS),
            html.P(
                "Signals at each bar's close on the z-score of the Spread & z-score page (same hedge, timeframe and "
                "window); fills at the next bar's prices; returns per unit of gross notional.",
                className="text-muted small mb-2",
            ),
            controls,
            dbc.Row([dbc.Col(stat_card(lbl, i)) for lbl, i in zip(labels, ID.METRICS)], className="g-3 mb-3"),
            chart_card(ID.EQUITY_GRAPH),
            table_card("Trades, newest first", ID.TRADES, TRADE_COLUMNS, "No trades in the history yet", height=360),
        ],
        fluid=True,
    )


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{x * 100:+.3f} %"


@callback(
    *[Output(i, "children") for i in ID.METRICS],
    Output(ID.EQUITY_GRAPH, "figure"),
    Output(ID.TRADES, "rowData"),
    Output(ID.CSV_LINK, "href"),
    Output(ID.MSG, "children"),
    Input(ID.TIMER, "n_intervals"),
    Input(ID.ENTRY, "value"),
    Input(ID.EXIT, "value"),
    Input(ID.STOP, "value"),
    Input(ID.COST, "value"),
)
def run(_n, entry, exit_level, stop, cost):
    try:
        bt = parse_params(entry, exit_level, stop, cost)
    except SettingsError as exc:
        return (*[no_update] * (len(ID.METRICS) + 3), error_text(str(exc)))
    market = current_market()
    snap = market.snapshot()
    result = market.shared(  # every tab with the same parameters in this 15 s slot shares the run
        ("backtest", snap.params, bt, market.revision(snap), snap.now_s * 1000 // RERUN_MS),
        lambda: market.backtest(snap, bt),
    )
    m = result["metrics"]
    fig = figures.equity_figure(result["times"], result["equity"], result["trades"], snap.params)
    query = urlencode(
        {"entry": bt.entry, "exit": bt.exit_level, "stop": "" if bt.stop is None else bt.stop, "cost_bps": bt.cost_bps}
    )
    return (
        _pct(m["total_return"]),
        "–" if math.isnan(m["sharpe"]) else f"{m['sharpe']:.2f}",
        _pct(-m["max_drawdown"]),
        "–" if math.isnan(m["hit_rate"]) else f"{m['hit_rate'] * 100:.0f} %",
        str(m["trades"]),
        fig,
        trade_rows(result["trades"]),
        f"/api/backtest.csv?{query}",
        None,
    )
