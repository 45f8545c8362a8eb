"""Settings: the pair, the z threshold, the rolling window, the poll interval; alert rules and
their delivery (webhook, test alert); the REST host (after a 451); the alert log."""

from __future__ import annotations

from dataclasses import asdict

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from components import ids
from components.ids import Settings as ID
from components.layout import error_text, hedge_options, ok_text
from components.tables import ALERT_COLUMNS, grid
from pages._tick import cursor_store, key, register_view
from services.alerting import TooSoonForTestAlert
from services.alerts import RULE_KINDS, Z_KINDS
from services.auth import may_edit
from services.bars import TIMEFRAMES
from services.binance import KNOWN_HOSTS
from services.market import current_market
from services.settings import (
    COOLDOWN_MAX_S,
    MAX_PAIRS,
    POLL_RANGE,
    THRESHOLD_RANGE,
    WINDOW_RANGE,
    SettingsError,
    pair_in,
    pair_name,
    parse_pair,
    query_pair,
    shown_webhook,
)

PATH = "/settings"
dash.register_page(__name__, path=PATH, name="Settings", title="Settings · Pair Monitor", order=5)

ALERT_ROWS = 500


def _field(label: str, control, help_text: str) -> dbc.Row:
    return dbc.Row(
        [dbc.Label(label, width=4, html_for=control.id), dbc.Col([control, dbc.FormText(help_text)], width=8)],
        className="mb-3",
    )


def layout(pair=None, **_kwargs):
    market = current_market()
    s = market.settings_for(pair_in(pair))
    options = sorted(set(market.symbols()) | set(s.pair))  # a leg that stopped trading still shows
    form = dbc.Card(
        dbc.CardBody(
            [
                html.H5(f"Pair and alerts · {s.pair_label}", className="card-title mb-3"),
                _field(
                    "Symbol A",
                    dcc.Dropdown(id=ID.SYMBOL_A, options=options, value=s.symbol_a, clearable=False),
                    "The leg whose price comes first in the spread.",
                ),
                _field(
                    "Symbol B",
                    dcc.Dropdown(id=ID.SYMBOL_B, options=options, value=s.symbol_b, clearable=False),
                    "spread = A − B (β = 1). Must differ from A.",
                ),
                _field(
                    "z threshold",
                    dbc.Input(id=ID.THRESHOLD, type="number", value=s.threshold, step="any"),
                    f"θ: the level of the z alert rules and of the chart bands, {THRESHOLD_RANGE[0]:g}–"
                    f"{THRESHOLD_RANGE[1]:g}.",
                ),
                _field(
                    "Rolling window",
                    dbc.Input(id=ID.WINDOW, type="number", value=s.window, step=1),
                    f"Buckets (seconds) in the rolling mean and std, {WINDOW_RANGE[0]}–{WINDOW_RANGE[1]}.",
                ),
                _field(
                    "Hedge method",
                    dbc.Select(id=ID.HEDGE, options=hedge_options(), value=s.hedge),
                    "β and α of spread = A − (β·B + α); also on the Spread & z-score page.",
                ),
                _field(
                    "Timeframe",
                    dbc.Select(id=ID.TIMEFRAME, options=list(TIMEFRAMES), value=s.timeframe),
                    "Bars the z-score, its window and the alerts count in.",
                ),
                _field(
                    "Log prices", dbc.Switch(id=ID.LOG, value=s.log_prices, label="hedge and spread on ln prices"), ""
                ),
                _field(
                    "Poll interval (s)",
                    dbc.Input(id=ID.POLL, type="number", value=s.poll_interval_s, step="any"),
                    f"How often prices are fetched, {POLL_RANGE[0]}–{POLL_RANGE[1]} s.",
                ),
                html.Div(
                    [dbc.Button("Save", id=ID.SAVE, color="primary", className="me-3"), html.Div(id=ID.SAVE_MSG)],
                    className="d-flex align-items-center",
                ),
            ]
        ),
        className="mb-3",
    )
    rules = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Alert rules", className="card-title mb-1"),
                dbc.FormText(
                    "θ is the z threshold above. A rule fires once per crossing, re-arms when the value is back "
                    "inside by its hysteresis, and stays quiet for its cooldown after an alert. Rules run in "
                    "the server (and the collector), whether or not a page is open."
                ),
                html.Div(_rule_list(s), id=ID.RULES, className="my-2"),
                dbc.Row(
                    [
                        dbc.Col(
                            dbc.Select(
                                id=ID.RULE_KIND,
                                options=[{"label": v, "value": k} for k, v in RULE_KINDS.items()],
                                value="spread_above",
                                size="sm",
                            ),
                            md=4,
                        ),
                        dbc.Col(
                            dbc.Input(id=ID.RULE_LEVEL, type="number", step="any", placeholder="level", size="sm"), md=2
                        ),
                        dbc.Col(
                            dbc.Select(
                                id=ID.RULE_LEG,
                                options=[{"label": "leg A", "value": "A"}, {"label": "leg B", "value": "B"}],
                                value="A",
                                size="sm",
                            ),
                            md=2,
                        ),
                        dbc.Col(
                            dbc.Input(
                                id=ID.RULE_HYST, type="number", step="any", min=0, placeholder="hysteresis", size="sm"
                            ),
                            md=2,
                        ),
                        dbc.Col(
                            dbc.Input(
                                id=ID.RULE_COOLDOWN,
                                type="number",
                                step=1,
                                min=0,
                                max=COOLDOWN_MAX_S,
                                placeholder="cooldown s",
                                size="sm",
                            ),
                            md=2,
                        ),
                    ],
                    className="g-1 mb-2",
                ),
                html.Div(
                    [
                        dbc.Button("Add rule", id=ID.RULE_ADD, color="primary", size="sm", className="me-3"),
                        html.Div(id=ID.RULE_MSG),
                    ],
                    className="d-flex align-items-center",
                ),
            ]
        ),
        className="mb-3",
    )
    delivery = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Delivery", className="card-title mb-2"),
                dbc.FormText(
                    "Every alert is toasted on every open page; turn on “Notify me” in the bar above for "
                    "browser notifications. A webhook receives each alert as JSON (rule, pair, value, UTC time); "
                    "it must be a public address, never this app or a private network (unless the app was "
                    "started with --allow-private-webhooks).",
                ),
                dbc.InputGroup(
                    [
                        dbc.Input(
                            id=ID.WEBHOOK,
                            type="url",
                            value=s.webhook_url if may_edit() else shown_webhook(s.webhook_url),
                            placeholder="https://example.com/hook (empty: no webhook)",
                        ),
                        dbc.Button("Save webhook", id=ID.WEBHOOK_SAVE, color="primary"),
                    ],
                    className="my-2",
                ),
                html.Div(id=ID.WEBHOOK_MSG),
                html.Div(
                    [
                        dbc.Button(
                            "Send test alert",
                            id=ID.TEST_ALERT,
                            color="warning",
                            outline=True,
                            size="sm",
                            className="me-3",
                        ),
                        html.Div(id=ID.TEST_MSG),
                    ],
                    className="d-flex align-items-center my-2",
                ),
                html.Div(id=ID.WEBHOOK_STATUS, className="small text-muted"),
            ]
        ),
        className="mb-3",
    )
    watchlist = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Watchlist", className="card-title mb-2"),
                html.Div(_watchlist(market.watchlist(), s.pair), id=ID.WATCHLIST),
                dbc.Row(
                    [
                        dbc.Col(dcc.Dropdown(id=ID.PAIR_ADD_A, options=options, placeholder="Symbol A"), width=5),
                        dbc.Col(dcc.Dropdown(id=ID.PAIR_ADD_B, options=options, placeholder="Symbol B"), width=4),
                        dbc.Col(dbc.Button("Add pair", id=ID.PAIR_ADD, color="info", size="sm"), width=3),
                    ],
                    className="g-2 align-items-center mt-2",
                ),
                dbc.FormText(
                    f"Up to {MAX_PAIRS} pairs, polled together in one request. A new pair starts from the first "
                    "pair's analysis and rules; edit it here after picking it. A removed pair's history stays "
                    "until it ages out."
                ),
                html.Div(id=ID.PAIR_MSG, className="mt-2"),
            ]
        ),
        className="mb-3",
    )
    host = dbc.Card(
        dbc.CardBody(
            [
                html.H5("Exchange host", className="card-title mb-2"),
                html.Div(id=ID.HOST_INFO, className="small mb-2"),
                html.Div(
                    [
                        dbc.Button(
                            f"Use {KNOWN_HOSTS.get(url, url)}",
                            id={"type": ID.HOST_BUTTON, "url": url},
                            color="secondary",
                            outline=True,
                            size="sm",
                            className="me-2 mb-1",
                            disabled=market.rest_host_in_use() is None,
                        )
                        for url in market.config.rest_hosts()
                    ]
                ),
                html.Div(id=ID.HOST_MSG, className="mt-2"),
            ]
        ),
        className="mb-3",
    )
    log = dbc.Card(
        dbc.CardBody(
            [
                html.Div(
                    [
                        html.H5("Alert log, newest first", className="card-title mb-0"),
                        dbc.Button("Clear", id=ID.CLEAR_ALERTS, color="danger", outline=True, size="sm"),
                    ],
                    className="d-flex justify-content-between align-items-center mb-2",
                ),
                html.Div(id=ID.CLEAR_MSG),
                grid(ID.ALERT_LOG, ALERT_COLUMNS, "No alerts yet", height=420),
            ]
        ),
        className="mb-3",
    )
    return dbc.Container(
        [
            dbc.Row([dbc.Col([watchlist, form, host], lg=5), dbc.Col([rules, delivery, log], lg=7)], className="g-3"),
            cursor_store(PATH),
        ],
        fluid=True,
    )


def _watchlist(book, editing) -> dbc.ListGroup:
    """The watched pairs: the one being edited marked, the others a link to edit them, each with
    its Remove button (not the last one)."""
    items = []
    for s in book:
        name = pair_name(s.pair)
        label = (
            html.Strong(f"{s.pair_label} (editing)")
            if s.pair == editing
            else dcc.Link(s.pair_label, href=f"{PATH}?pair={name}", title="Edit this pair's analysis and rules")
        )
        remove = dbc.Button(
            "Remove",
            id={"type": ID.PAIR_REMOVE, "pair": name},
            color="danger",
            outline=True,
            size="sm",
            disabled=len(book) == 1,
        )
        items.append(
            dbc.ListGroupItem(
                [label, html.Small(f"{s.hedge} · {s.timeframe} · window {s.window} · θ {s.threshold:g}"), remove],
                className="d-flex justify-content-between align-items-center gap-2 py-1",
            )
        )
    return dbc.ListGroup(items)


@callback(
    Output(ID.WATCHLIST, "children"),
    Output(ID.PAIR_MSG, "children"),
    Input(ID.PAIR_ADD, "n_clicks"),
    Input({"type": ID.PAIR_REMOVE, "pair": ALL}, "n_clicks"),
    State(ID.PAIR_ADD_A, "value"),
    State(ID.PAIR_ADD_B, "value"),
    State(ids.PAGE_LOCATION, "search"),
    prevent_initial_call=True,
)
def edit_watchlist(_add, removes, a, b, search):
    """Add the picked pair, or remove one (its Remove button)."""
    market = current_market()
    trigger = ctx.triggered_id
    try:
        if isinstance(trigger, dict):  # a Remove button; a re-rendered list also fires this with no click
            if not any(removes):
                return dash.no_update, dash.no_update
            pair = parse_pair(trigger.get("pair"))
            market.remove_pair(pair)
            done = f"Removed {pair[0]}/{pair[1]}; its history stays until it ages out."
        else:
            added = market.add_pair(a, b)
            done = f"Watching {added.pair_label}."
    except KeyError as exc:
        return dash.no_update, error_text(exc.args[0])
    except SettingsError as exc:
        return dash.no_update, error_text(f"Not changed: {exc}")
    editing = market.settings_for(pair_in(query_pair(search))).pair
    return _watchlist(market.watchlist(), editing), ok_text(done)


def _rule_list(s) -> list:
    """The alert rules of a pair's settings `s`, each with its Remove button."""
    if not s.rules:
        return [html.Div("No rules: no alerts will fire.", className="text-warning small")]
    return [
        dbc.ListGroup(
            [
                dbc.ListGroupItem(
                    [
                        html.Span(rule.label(s.pair, s.threshold), className="rule-label"),
                        dbc.Button(
                            "Remove", id={"type": ID.RULE_DELETE, "index": i}, color="danger", outline=True, size="sm"
                        ),
                    ],
                    className="d-flex justify-content-between align-items-center py-1",
                )
                for i, rule in enumerate(s.rules)
            ]
        )
    ]


@callback(
    Output(ID.SAVE_MSG, "children"),
    Output(ids.PAGE_LOCATION, "search", allow_duplicate=True),
    Input(ID.SAVE, "n_clicks"),
    State(ID.SYMBOL_A, "value"),
    State(ID.SYMBOL_B, "value"),
    State(ID.THRESHOLD, "value"),
    State(ID.WINDOW, "value"),
    State(ID.POLL, "value"),
    State(ID.HEDGE, "value"),
    State(ID.TIMEFRAME, "value"),
    State(ID.LOG, "value"),
    State(ids.PAGE_LOCATION, "search"),
    prevent_initial_call=True,
)
def save(_n, a, b, threshold, window, poll, hedge, timeframe, log, search):
    """Save the form for the pair the URL names (the first pair without one); a pair given other
    symbols is named so in the URL."""
    editing = pair_in(query_pair(search))
    try:
        saved = current_market().save_settings(
            {
                "symbol_a": a,
                "symbol_b": b,
                "threshold": threshold,
                "window": window,
                "poll_interval_s": poll,
                "hedge": hedge,
                "timeframe": timeframe,
                "log_prices": log,
            },
            editing,
        )
    except SettingsError as exc:
        return error_text(f"Not saved: {exc}"), dash.no_update
    renamed = editing is not None and saved.pair != editing
    return ok_text(
        f"Saved: {saved.pair_label}, θ = {saved.threshold:g}, window {saved.window} × "
        f"{saved.timeframe}, {saved.hedge} hedge, poll {saved.poll_interval_s:g} s. "
        "Applies to every page and tab."
    ), f"?pair={pair_name(saved.pair)}" if renamed else dash.no_update


@callback(
    Output(ID.CLEAR_MSG, "children"),
    Output(ID.ALERT_LOG, "rowData", allow_duplicate=True),
    Input(ID.CLEAR_ALERTS, "n_clicks"),
    prevent_initial_call=True,
)
def clear_alerts(_n):
    current_market().alerts.clear()
    return ok_text("Alert log cleared."), []


@callback(
    Output(ID.RULES, "children"),
    Output(ID.RULE_MSG, "children"),
    Input(ID.RULE_ADD, "n_clicks"),
    Input({"type": ID.RULE_DELETE, "index": ALL}, "n_clicks"),
    State(ID.RULE_KIND, "value"),
    State(ID.RULE_LEVEL, "value"),
    State(ID.RULE_LEG, "value"),
    State(ID.RULE_HYST, "value"),
    State(ID.RULE_COOLDOWN, "value"),
    State(ids.PAGE_LOCATION, "search"),
    prevent_initial_call=True,
)
def edit_rules(_add, deletes, kind, level, leg, hysteresis, cooldown, search):
    """Add or remove a rule of the pair the URL names (the first pair without one)."""
    market = current_market()
    pair = pair_in(query_pair(search))
    rules = [asdict(r) for r in market.settings_for(pair).rules]
    trigger = ctx.triggered_id
    if isinstance(trigger, dict):  # a Remove button; list re-renders also fire this with no click
        index = trigger.get("index")
        if not any(deletes) or not isinstance(index, int) or not 0 <= index < len(rules):
            return dash.no_update, dash.no_update  # no click, or an index no button has (crafted)
        removed = rules.pop(index)
        done = f"Removed {RULE_KINDS[removed['kind']]}."
    else:
        rules.append(
            {
                "kind": kind,
                "level": None if kind in Z_KINDS else level,
                "leg": leg,
                "hysteresis": hysteresis,
                "cooldown_s": cooldown,
            }
        )
        done = "Rule added."
    try:
        saved = market.save_settings({"rules": rules}, pair)
    except SettingsError as exc:
        return dash.no_update, error_text(f"Not saved: {exc}")
    return _rule_list(saved), ok_text(done)


@callback(
    Output(ID.WEBHOOK_MSG, "children"),
    Input(ID.WEBHOOK_SAVE, "n_clicks"),
    State(ID.WEBHOOK, "value"),
    prevent_initial_call=True,
)
def save_webhook(_n, url):
    try:
        saved = current_market().save_settings({"webhook_url": url})
    except SettingsError as exc:
        return error_text(f"Not saved: {exc}")
    where = shown_webhook(saved.webhook_url)
    return ok_text(f"Alerts will be POSTed to {where}." if saved.webhook_url else "Webhook off.")


@callback(Output(ID.TEST_MSG, "children"), Input(ID.TEST_ALERT, "n_clicks"), prevent_initial_call=True)
def send_test_alert(_n):
    market = current_market()
    try:
        alert = market.send_test_alert()
    except (TooSoonForTestAlert, SettingsError) as exc:  # too soon, a viewer, the database down
        return error_text(f"Not sent: {exc}")
    where = "the webhook and " if market.current_settings().webhook_url else ""
    return ok_text(f"Test alert #{alert.id} sent to {where}every open page.")


def _webhook_status(hook: dict | None):
    if hook is None:
        return "No webhook delivery yet."
    return html.Span(
        f"Last webhook delivery {'OK' if hook['ok'] else 'FAILED'} at {hook['time_utc']} "
        f"(alert {hook['alert_id']}, {hook['rule']}): {hook['detail']}",
        className="text-success" if hook["ok"] else "text-danger",
    )


def build(market, snap, _view, cursor):
    """The alert log when it changed (a new alert, or Clear); the webhook's last delivery and
    the REST host, every tick."""
    values = {
        key(ID.WEBHOOK_STATUS, "children"): _webhook_status(snap.status.webhook),
        key(ID.HOST_INFO, "children"): _host_info(market, snap.status),
    }
    newest = market.alerts.last_id()
    if newest != cursor.get("alerts"):
        values[key(ID.ALERT_LOG, "rowData")] = [a.as_row() for a in market.alerts.log(limit=ALERT_ROWS)]
    return values, {"alerts": newest}


register_view(PATH, [(ID.WEBHOOK_STATUS, "children"), (ID.HOST_INFO, "children"), (ID.ALERT_LOG, "rowData")], build)


def _host_info(market, status) -> list:
    host = market.rest_host_in_use()
    if host is None:
        return [
            f"Prices come from: {status.source_label}. The exchange host applies when the app runs with "
            "--source binance or auto."
        ]
    info = [html.Div(["REST host in use: ", html.Code(host)])]
    err = status.last_error
    if err and err.status == 451:
        info.append(
            dbc.Alert(
                [
                    html.B("HTTP 451 — restricted location. "),
                    "Binance refuses api.binance.com from this network's country. The market-data host "
                    "data-api.binance.vision serves the same public prices; Binance.US is a separate "
                    "exchange with its own symbols.",
                ],
                color="danger",
                className="py-2 small mt-2",
            )
        )
    return info


@callback(
    Output(ID.HOST_MSG, "children"), Input({"type": ID.HOST_BUTTON, "url": ALL}, "n_clicks"), prevent_initial_call=True
)
def switch_host(clicks):
    if not any(clicks):
        return dash.no_update
    url = ctx.triggered_id.get("url")
    if not isinstance(url, str):
        return error_text("Not switched: no such host")
    market = current_market()
    try:
        market.save_settings({"binance_url": "" if url == market.config.binance_url else url})
    except SettingsError as exc:
        return error_text(f"Not switched: {exc}")
    return ok_text(f"Switched to {url}; the next poll goes there (and after a restart too).")
