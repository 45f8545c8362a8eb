"""Spread & z-score: hedge method, timeframe and window; spread, z (with bands and alert markers),
β over time, and the statistics panel (ADF, half-life, return correlation)."""
from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from components import ids
from components.ids import Analytics as ID
from components.layout import HEDGE_LABELS, chart_card, error_text, hedge_options, ok_text, range_picker, stat_card
from pages._live import register_live_chart
from services.bars import TIMEFRAMES
from services.market import current_market
from services.settings import SettingsError, parse_window

dash.register_page(__name__, path="/analytics", name="Spread & z-score", title="Spread & z-score · Pair Monitor",
                   order=1)

DEFAULT_CORR_WINDOW = 60


def layout(**_kwargs):
    s = current_market().settings
    controls = dbc.Row([
        dbc.Col(dbc.InputGroup([dbc.InputGroupText("Hedge"),
                                dbc.Select(id=ID.HEDGE, options=hedge_options(), value=s.hedge)], size="sm"),
                width="auto"),
        dbc.Col(dbc.RadioItems(id=ID.TIMEFRAME, options=[{"label": t, "value": t} for t in TIMEFRAMES],
                               value=s.timeframe, inline=True, className="btn-group", inputClassName="btn-check",
                               labelClassName="btn btn-sm btn-outline-info", labelCheckedClassName="active"),
                width="auto"),
        dbc.Col(dbc.Switch(id=ID.LOG, label="log prices", value=s.log_prices), width="auto"),
        dbc.Col(dbc.InputGroup([
            dbc.InputGroupText("Window (bars)"),
            dbc.Input(id=ID.WINDOW, type="number", value=s.window, step=1, debounce=True, style={"maxWidth": "100px"}),
            dbc.Button("Apply", id=ID.WINDOW_APPLY, color="primary"),
        ], size="sm"), width="auto"),
        dbc.Col(html.Div(id=ID.PARAMS_MSG), width="auto"),
        dbc.Col(range_picker(ID.RANGE), className="d-flex justify-content-end"),
    ], className="g-3 mb-3 align-items-center")
    cards = [stat_card("z-score", ID.STAT_Z, ID.STAT_Z_SUB), stat_card("Spread", ID.STAT_SPREAD),
             stat_card("Rolling mean", ID.STAT_MEAN), stat_card("Rolling std", ID.STAT_STD),
             stat_card("Hedge ratio β", ID.STAT_BETA, ID.STAT_BETA_SUB),
             stat_card("Alerts (this pair)", ID.STAT_ALERTS)]
    panel = dbc.Card(dbc.CardBody([
        html.Div([html.H6("Mean reversion", className="card-title mb-0"),
                  dbc.InputGroup([dbc.InputGroupText("Return corr. window"),
                                  dbc.Input(id=ID.CORR_WINDOW, type="number", value=DEFAULT_CORR_WINDOW, step=1,
                                            debounce=True, style={"maxWidth": "90px"})], size="sm",
                                 style={"width": "auto"})],
                 className="d-flex justify-content-between align-items-center mb-2"),
        dcc.Loading(html.Div(id=ID.STATS_PANEL), type="dot", delay_show=800),
    ]), className="mb-3 stat-card")
    return dbc.Container([
        controls,
        dbc.Row([dbc.Col(c) for c in cards], className="g-3 mb-3"),
        panel,
        chart_card(ID.SPREAD_GRAPH, ID.SPREAD_STATE),
        chart_card(ID.Z_GRAPH, ID.Z_STATE),
        chart_card(ID.BETA_GRAPH, ID.BETA_STATE),
    ], fluid=True)


def _fmt(x, spec: str = ",.6g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "∞ (no pull back)"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7_200 else f"{seconds / 3_600:,.1f} h"


@callback(
    Output(ID.STAT_Z, "children"), Output(ID.STAT_Z_SUB, "children"), Output(ID.STAT_SPREAD, "children"),
    Output(ID.STAT_MEAN, "children"), Output(ID.STAT_STD, "children"), Output(ID.STAT_BETA, "children"),
    Output(ID.STAT_BETA_SUB, "children"), Output(ID.STAT_ALERTS, "children"),
    Input(ids.INTERVAL, "n_intervals"),
)
def update_cards(_n):
    market = current_market()
    market.refresh()
    settings = market.settings
    row = market.latest()
    nan = float("nan")
    z, spread, mean, std, beta, alpha = (nan,) * 6 if row is None else (
        row["zscore"], row["spread"], row["mean"], row["std"], row["beta"], row["alpha"])
    status = market.status()
    if status["status"] == "stale":
        where = f"no fresh data for {status['age_s']:,.0f} s"
    elif math.isnan(z):
        where = f"undefined until {settings.window} bars are filled"
    else:
        where = "outside the band" if abs(z) >= settings.threshold else "inside the band"
    return (_fmt(z, "+.3f"), f"threshold ±{settings.threshold:g} · {where}", _fmt(spread), _fmt(mean), _fmt(std),
            _fmt(beta, ".6g"), f"α = {_fmt(alpha)} · {HEDGE_LABELS[settings.hedge]}",
            str(market.alerts.count(settings.pair_label)))


def _stat(label, value, sub=None):
    return dbc.Col([html.Div(label, className="stat-label"), html.Div(value, className="stat-value fs-5"),
                    html.Div(sub, className="stat-sub") if sub else None])


@callback(Output(ID.STATS_PANEL, "children"), Input(ids.INTERVAL, "n_intervals"), Input(ID.CORR_WINDOW, "value"))
def update_statistics(_n, corr_window):
    try:
        window = parse_window(corr_window)
    except SettingsError as exc:
        return error_text(f"Return correlation window: {exc}")
    market = current_market()
    st = market.statistics(window)
    adf = st["adf"]
    if adf is None:
        adf_cols = [_stat("ADF", "–", "needs at least 20 bars with a spread")]
    else:
        crit = ", ".join(f"{k} {v:.2f}" for k, v in adf["critical"].items())
        verdict = dbc.Badge(adf["verdict"], color="success" if adf["mean_reverting_5pct"] else "secondary")
        adf_cols = [_stat("ADF statistic", f"{adf['statistic']:.3f}", f"critical: {crit}"),
                    _stat("ADF p-value", f"{adf['pvalue']:.4f}", verdict)]
    hl = st["half_life_bars"]
    hl_text = "–" if math.isnan(hl) else _duration(hl * st["tf_s"])
    return [dbc.Row([*adf_cols,
                     _stat("Half-life", hl_text, "AR(1) on the spread" if math.isnan(hl) or math.isinf(hl)
                           else f"{hl:,.1f} bars, AR(1) on the spread"),
                     _stat("Return correlation", _fmt(st["return_corr"], ".3f"), f"last {window} bars, log returns")],
                    className="g-3"),
            html.Div(f"Over the last {st['bars']:,} bars with a spread; computed {st['computed_utc']}, "
                     f"refreshed every 30 s or when the inputs change.", className="stat-sub mt-2")]


@callback(
    Output(ID.PARAMS_MSG, "children"),
    Input(ID.HEDGE, "value"), Input(ID.TIMEFRAME, "value"), Input(ID.LOG, "value"),
    Input(ID.WINDOW_APPLY, "n_clicks"), Input(ID.WINDOW, "n_submit"),
    State(ID.WINDOW, "value"),
    prevent_initial_call=True,
)
def apply_params(hedge, timeframe, log, _clicks, _submit, window):
    """Hedge, timeframe and log apply at once; the window on Apply. Saved for every page and tab."""
    change = {"hedge": hedge, "timeframe": timeframe, "log_prices": log}
    if ctx.triggered_id in (ID.WINDOW_APPLY, ID.WINDOW):
        change["window"] = window
    market = current_market()
    if all(getattr(market.settings, k) == v for k, v in change.items()):
        return no_update
    try:
        saved = market.save_settings(change)
    except SettingsError as exc:
        return error_text(str(exc))
    return ok_text(f"Now {HEDGE_LABELS[saved.hedge]}, {saved.timeframe} bars, window {saved.window}"
                   f"{', log prices' if saved.log_prices else ''}: every page and tab.")


register_live_chart("spread", ID.SPREAD_GRAPH, ID.SPREAD_STATE, ID.RANGE)
register_live_chart("zscore", ID.Z_GRAPH, ID.Z_STATE, ID.RANGE)
register_live_chart("beta", ID.BETA_GRAPH, ID.BETA_STATE, ID.RANGE)
