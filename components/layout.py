"""Pure layout builders shared by the pages: navbar, stat cards, chart cards, range picker."""

from __future__ import annotations

import math

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids

HEDGE_LABELS = {
    "none": "None (β = 1)",
    "ols": "OLS (static, expanding)",
    "rolling-ols": "Rolling OLS",
    "kalman": "Kalman filter",
    "robust": "Robust (Theil–Sen)",
}
RANGES = {"5m": 300, "15m": 900, "1h": 3_600, "6h": 21_600, "24h": 86_400}
DEFAULT_RANGE = "15m"


def navbar(pages, sign_out: bool = False) -> dbc.Navbar:
    """The brand, the source and freshness badges (always in view, on one line), and the rest:
    page links, the pair, the legs and "Notify me", behind a toggler below the lg breakpoint (992 px).
    With `sign_out` (the app has users), a link to sign out."""
    links = [
        dbc.NavLink(p["name"], href=p["relative_path"], id=ids.nav_link(p["relative_path"]), active=False)
        for p in pages
    ]
    if sign_out:
        links.append(dbc.NavLink("Sign out", href="/logout", external_link=True, className="sign-out"))
    status = html.Div(
        [
            dbc.Badge("…", id=ids.SOURCE_BADGE, color="secondary", className="me-2 source-badge"),
            dbc.Badge(
                "waiting for data",
                id=ids.AGE_BADGE,
                color="secondary",
                className="age-badge",
                title="the pair's oldest leg: age of its last tick (UTC time of that tick)",
            ),
        ],
        className="nav-status d-flex align-items-center ms-auto order-lg-3 ms-lg-3",
    )
    menu = dbc.Collapse(
        [
            dbc.Nav(links, navbar=True, className="me-auto"),
            html.Div(
                [
                    html.Span(id=ids.NAV_PAIR, className="nav-pair me-3"),
                    html.Span(id=ids.LEG_BADGES, className="me-2 leg-badges"),
                    dbc.Switch(
                        id=ids.NOTIFY,
                        label="Notify me",
                        value=False,
                        persistence=True,
                        persistence_type="local",
                        className="mb-0 small text-light notify-switch",
                    ),
                ],
                className="d-flex align-items-center flex-wrap row-gap-1 py-2 py-lg-0",
            ),
        ],
        id=ids.NAV_COLLAPSE,
        is_open=False,
        navbar=True,
        className="order-lg-2",
    )
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand(
                    [html.Span("◆ ", className="brand-mark"), html.Span("Pair Monitor", className="brand-name")],
                    href="/",
                ),
                status,
                dbc.NavbarToggler(id=ids.NAV_TOGGLER, className="ms-2 order-lg-4"),
                menu,
            ],
            fluid=True,
        ),
        color="dark",
        dark=True,
        expand="lg",
        className="mb-3 border-bottom border-secondary",
    )


def status_banner(open_to: str = "") -> html.Div:
    """The live banner (filled by the tick), under a fixed one when the app is `open_to` a
    non-loopback address with no login (--insecure-no-auth)."""
    fixed = []
    if open_to:
        fixed.append(
            dbc.Alert(
                f"No login: anyone who can reach {open_to} can see this and change the settings, the watchlist, "
                "rules and the webhook (--insecure-no-auth).",
                color="danger",
                className="py-2 small mb-2 insecure-banner",
            )
        )
    return html.Div([*fixed, html.Div(id=ids.STATUS_BANNER)])


LEG_COLORS = {"live": "success", "stale": "danger", "disconnected": "danger", "waiting": "secondary"}


def leg_badges(legs) -> list:
    """One badge per symbol (`services.status.LegStatus`): live (age), STALE (age), or
    disconnected (reason on hover)."""
    badges = []
    for leg in legs:
        sym, state, age = leg.symbol, leg.state, leg.age_s
        if state == "live":
            text = f"{sym} live {age:.1f} s"
        elif state == "stale":
            text = f"{sym} STALE {age:,.0f} s"
        elif state == "disconnected":
            text = f"{sym} disconnected"
        else:
            text = f"{sym} waiting"
        badges.append(
            dbc.Badge(
                text,
                color=LEG_COLORS[state],
                className=f"me-1 leg-badge leg-{state}",
                title=leg.reason or f"last tick {leg.last_tick_utc or 'none yet'}",
            )
        )
    return badges


def alert_text(alert) -> str:
    """One line for a toast or a desktop notification: rule, value, UTC time."""
    value = "" if math.isnan(alert.value) else f" · value {alert.value:,.6g}"  # a test alert may have none
    return f"{alert.rule}{value} at {alert.time.strftime('%H:%M:%S')}Z"


def alert_toast(alert) -> dbc.Toast:
    """A new alert, shown on whatever page is open."""
    return dbc.Toast(
        alert_text(alert),
        header=f"Alert · {alert.pair}",
        icon="warning",
        dismissable=True,
        duration=15_000,
        className="alert-toast mb-2",
    )


def stat_card(label: str, value_id: str, sub_id: str | None = None, label_id: str | None = None) -> dbc.Card:
    head = html.Div(label, className="stat-label", **({"id": label_id} if label_id else {}))
    body = [head, html.Div("–", id=value_id, className="stat-value")]
    if sub_id:
        body.append(html.Div(id=sub_id, className="stat-sub"))
    return dbc.Card(dbc.CardBody(body), className="stat-card h-100")


def chart_card(graph_id: str) -> dbc.Card:
    """A chart with its Export PNG button, and the store of its zoomed x window (live charts
    redraw the window at full resolution)."""
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div(
                    dbc.Button(
                        "Export PNG",
                        id=ids.export_button(graph_id),
                        size="sm",
                        color="info",
                        outline=True,
                        className="export-png",
                    ),
                    className="d-flex justify-content-end",
                ),
                dcc.Graph(
                    id=graph_id,
                    config={
                        "displaylogo": False,
                        "responsive": True,
                        "toImageButtonOptions": {"format": "png", "scale": 2},
                    },
                    className="chart",
                ),
                dcc.Store(id=ids.export_done(graph_id)),
                dcc.Store(id=ids.zoom(graph_id)),
            ]
        ),
        className="mb-3 chart-card",
    )


def button_group(component_id, values, value, class_name: str = "", labels=None) -> dbc.RadioItems:
    """Radio choices drawn as a row of small toggle buttons (labelled by `labels[v]` or `v`)."""
    return dbc.RadioItems(
        id=component_id,
        options=[{"label": (labels or {}).get(v, v), "value": v} for v in values],
        value=value,
        inline=True,
        className=f"btn-group {class_name}".strip(),
        inputClassName="btn-check",
        labelClassName="btn btn-sm btn-outline-info",
        labelCheckedClassName="active",
    )


def range_picker(component_id: str) -> html.Div:
    return html.Div(
        [
            html.Span("Range", className="me-2 text-muted small"),
            button_group(component_id, RANGES, DEFAULT_RANGE, "range-picker"),
        ],
        className="d-flex align-items-center",
    )


def error_text(message: str) -> dbc.Alert:
    return dbc.Alert(message, color="danger", className="py-2 mb-0 small", dismissable=False)


def ok_text(message: str) -> dbc.Alert:
    return dbc.Alert(message, color="success", className="py-2 mb-0 small", duration=6000)


def hedge_options() -> list[dict]:
    return [{"label": label, "value": method} for method, label in HEDGE_LABELS.items()]
