"""Spread & z-score: hedge method, timeframe and window; spread, z (with bands and alert markers),
β over time, and the statistics panel (ADF, half-life, return correlation)."""

from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, ctx, html, no_update

from components import ids
from components.ids import Analytics as ID
from components.layout import (
    HEDGE_LABELS,
    button_group,
    chart_card,
    error_text,
    hedge_options,
    ok_text,
    range_picker,
    stat_card,
)
from pages._tick import chart, cursor_store, key, register_view
from services.bars import TIMEFRAMES
from services.market import current_market
from services.settings import SettingsError, pair_in, parse_window, query_pair
from services.stats import DEFAULT_CORR_WINDOW

PATH = "/analytics"
dash.register_page(__name__, path=PATH, name="Spread & z-score", title="Spread & z-score · Pair Monitor", order=2)


def layout(pair=None, **_kwargs):
    s = current_market().settings_for(pair_in(pair))
    controls = dbc.Row(
        [
            dbc.Col(
                dbc.InputGroup(
                    [dbc.InputGroupText("Hedge"), dbc.Select(id=ID.HEDGE, options=hedge_options(), value=s.hedge)],
                    size="sm",
                ),
                width="auto",
            ),
            dbc.Col(
                button_group(ID.TIMEFRAME, TIMEFRAMES, s.timeframe),
                width="auto",
            ),
            dbc.Col(dbc.Switch(id=ID.LOG, label="log prices", value=s.log_prices), width="auto"),
            dbc.Col(
                dbc.InputGroup(
                    [
                        dbc.InputGroupText("Window (bars)"),
                        dbc.Input(
                            id=ID.WINDOW,
                            type="number",
                            value=s.window,
                            step=1,
                            debounce=True,
                            style={"maxWidth": "100px"},
                        ),
                        dbc.Button("Apply", id=ID.WINDOW_APPLY, color="primary"),
                    ],
                    size="sm",
                ),
                width="auto",
            ),
            dbc.Col(html.Div(id=ID.PARAMS_MSG), width="auto"),
            dbc.Col(range_picker(ids.RANGE), className="d-flex justify-content-end"),
        ],
        className="g-3 mb-3 align-items-center",
    )
    cards = [
        stat_card("z-score", ID.STAT_Z, ID.STAT_Z_SUB),
        stat_card("Spread", ID.STAT_SPREAD),
        stat_card("Rolling mean", ID.STAT_MEAN),
        stat_card("Rolling std", ID.STAT_STD),
        stat_card("Hedge ratio β", ID.STAT_BETA, ID.STAT_BETA_SUB),
        stat_card("Alerts (this pair)", ID.STAT_ALERTS),
    ]
    panel = dbc.Card(
        dbc.CardBody(
            [
                html.Div(
                    [
                        html.H6("Mean reversion", className="card-title mb-0"),
                        dbc.InputGroup(
                            [
                                dbc.InputGroupText("Return corr. window"),
                                dbc.Input(
                                    id=ID.CORR_WINDOW,
                                    type="number",
                                    value=DEFAULT_CORR_WINDOW,
                                    step=1,
                                    debounce=True,
                                    style={"maxWidth": "90px"},
                                ),
                            ],
                            size="sm",
                            style={"width": "auto"},
                        ),
                    ],
                    className="d-flex justify-content-between align-items-center mb-2",
                ),
                html.Div("Computing the statistics…", id=ID.STATS_PANEL, className="stat-sub"),
            ]
        ),
        className="mb-3 stat-card",
    )
    return dbc.Container(
        [
            controls,
            dbc.Row([dbc.Col(c) for c in cards], className="g-3 mb-3"),
            panel,
            chart_card(ID.SPREAD_GRAPH),
            chart_card(ID.Z_GRAPH),
            chart_card(ID.BETA_GRAPH),
            cursor_store(PATH),
        ],
        fluid=True,
    )


def _fmt(x, spec: str = ",.6g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "∞ (no pull back)"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7_200 else f"{seconds / 3_600:,.1f} h"


CARDS = [
    (c, "children")
    for c in (
        ID.STAT_Z,
        ID.STAT_Z_SUB,
        ID.STAT_SPREAD,
        ID.STAT_MEAN,
        ID.STAT_STD,
        ID.STAT_BETA,
        ID.STAT_BETA_SUB,
        ID.STAT_ALERTS,
    )
]
CHARTS = (("spread", ID.SPREAD_GRAPH), ("zscore", ID.Z_GRAPH), ("beta", ID.BETA_GRAPH))


def _cards(market, snap) -> tuple:
    settings = snap.settings
    row = market.shared(("latest", snap.params, snap.now_s, snap.seq), lambda: market.latest(snap))
    nan = float("nan")
    z, spread, mean, std, beta, alpha = (
        (nan,) * 6
        if row is None
        else (row["zscore"], row["spread"], row["mean"], row["std"], row["beta"], row["alpha"])
    )
    if snap.status.state == "stale":
        where = f"no fresh data for {snap.status.age_s:,.0f} s"
    elif math.isnan(z):
        where = f"undefined until {settings.window} bars are filled"
    else:
        where = "outside the band" if abs(z) >= settings.threshold else "inside the band"
    return (
        _fmt(z, "+.3f"),
        f"threshold ±{settings.threshold:g} · {where}",
        _fmt(spread),
        _fmt(mean),
        _fmt(std),
        _fmt(beta, ".6g"),
        f"α = {_fmt(alpha)} · {HEDGE_LABELS[settings.hedge]}",
        _fmt(market.alert_count(settings.pair_label, market.newest_alert(snap)), "d"),
    )


def _stat(label, value, sub=None):
    return dbc.Col(
        [
            html.Div(label, className="stat-label"),
            html.Div(value, className="stat-value fs-5"),
            html.Div(sub, className="stat-sub") if sub else None,
        ]
    )


def _statistics_panel(st: dict, window: int) -> list:
    adf = st["adf"]
    if adf is None:
        adf_cols = [_stat("ADF", "–", "needs at least 20 bars with a spread")]
    else:
        crit = ", ".join(f"{k} {v:.2f}" for k, v in adf["critical"].items())
        verdict = dbc.Badge(adf["verdict"], color="success" if adf["mean_reverting_5pct"] else "secondary")
        adf_cols = [
            _stat("ADF statistic", f"{adf['statistic']:.3f}", f"critical: {crit}"),
            _stat("ADF p-value", f"{adf['pvalue']:.4f}", verdict),
        ]
    hl = st["half_life_bars"]
    hl_text = "–" if math.isnan(hl) else _duration(hl * st["tf_s"])
    return [
        dbc.Row(
            [
                *adf_cols,
                _stat(
                    "Half-life",
                    hl_text,
                    "AR(1) on the spread"
                    if math.isnan(hl) or math.isinf(hl)
                    else f"{hl:,.1f} bars, AR(1) on the spread",
                ),
                _stat("Return correlation", _fmt(st["return_corr"], ".3f"), f"last {window} bars, log returns"),
            ],
            className="g-3",
        ),
        html.Div(
            f"Over the last {st['bars']:,} bars with a spread; computed {st['computed_utc']}, "
            f"refreshed every 30 s or when the inputs change.",
            className="stat-sub mt-2",
        ),
    ]


def build(market, snap, view, cursor):
    """Cards every tick; the statistics panel when it was recomputed or its window changed; the
    three charts' updates (the z chart redraws whole when a new alert adds a marker)."""
    values = dict(zip((key(*c) for c in CARDS), _cards(market, snap)))
    new_cursor = {}
    try:
        window = parse_window(view.get("corr", DEFAULT_CORR_WINDOW))
    except SettingsError as exc:
        panel, seen = error_text(f"Return correlation window: {exc}"), str(exc)
    else:
        st = market.statistics(snap, window)
        seen = f"{st['computed_utc']}:{window}:{snap.params}"
        panel = market.shared(("stats-panel", seen), lambda: _statistics_panel(st, window))
    if seen != cursor.get("stats"):
        values[key(ID.STATS_PANEL, "children")] = panel
    new_cursor["stats"] = seen
    alert_id = market.newest_alert(snap)
    for kind, graph in CHARTS:
        values[key(graph, "figure")], new_cursor[graph] = chart(
            kind,
            market,
            snap,
            view.get("range"),
            cursor.get(graph),
            alert_id if kind == "zscore" else 0,
            view["zoom"].get(graph),
        )
    return values, new_cursor


@callback(
    Output(ID.PARAMS_MSG, "children"),
    Input(ID.HEDGE, "value"),
    Input(ID.TIMEFRAME, "value"),
    Input(ID.LOG, "value"),
    Input(ID.WINDOW_APPLY, "n_clicks"),
    Input(ID.WINDOW, "n_submit"),
    State(ID.WINDOW, "value"),
    State(ids.PAGE_LOCATION, "search"),
    prevent_initial_call=True,
)
def apply_params(hedge, timeframe, log, _clicks, _submit, window, search):
    """Hedge, timeframe and log apply at once; the window on Apply. Saved, for the URL's pair, for
    every page and tab."""
    change = {"hedge": hedge, "timeframe": timeframe, "log_prices": log}
    if ctx.triggered_id in (ID.WINDOW_APPLY, ID.WINDOW):
        change["window"] = window
    market = current_market()
    pair = pair_in(query_pair(search))
    if all(getattr(market.settings_for(pair), k) == v for k, v in change.items()):
        return no_update
    try:
        saved = market.save_settings(change, pair)
    except SettingsError as exc:
        return error_text(str(exc))
    return ok_text(
        f"Now {HEDGE_LABELS[saved.hedge]}, {saved.timeframe} bars, window {saved.window}"
        f"{', log prices' if saved.log_prices else ''}: every page and tab."
    )


register_view(PATH, [*CARDS, (ID.STATS_PANEL, "children"), *((g, "figure") for _, g in CHARTS)], build)
