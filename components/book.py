"""Pure builders for the overview of the watchlist: one row per pair (a card on a phone), the z
bar against ±θ, and the sparkline of the last hour of z."""

from __future__ import annotations

import math
from urllib.parse import quote

import numpy as np
from dash import dcc, html

STATE_COLORS = {"live": "success", "waiting": "secondary", "stale": "danger", "disconnected": "danger"}
COLUMNS = ("Pair", "Last prices", "z", "Spread", "β", "Half-life", "ADF p", "State", "Alerts today", "z, last hour")
SPARK_W, SPARK_H = 120, 28


def _num(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def z_color(z: float | None, threshold: float) -> str:
    """danger at or beyond ±θ, warning past half of it, else muted (no signal)."""
    if z is None:
        return "secondary"
    return "danger" if abs(z) >= threshold else "warning" if abs(z) >= threshold / 2 else "success"


def z_bar(z: float | None, threshold: float) -> html.Div:
    """z as a bar from the centre line, on a scale of ±2θ, with ticks at ±θ, and its value."""
    color = z_color(z, threshold)
    if z is None:
        fill = {}
    else:
        share = max(-1.0, min(1.0, z / (2 * threshold))) * 50  # % of the track's width
        fill = {"left": f"{50 + min(share, 0):.1f}%", "width": f"{abs(share):.1f}%"}
    return html.Div(
        [
            html.Div(
                [
                    html.Div(className=f"zbar-fill bg-{color}", style=fill),
                    html.Div(className="zbar-theta", style={"left": "25%"}),
                    html.Div(className="zbar-theta", style={"left": "75%"}),
                    html.Div(className="zbar-zero"),
                ],
                className="zbar",
                title=f"z against ±θ = ±{threshold:g} (the bar spans ±{2 * threshold:g})",
            ),
            html.Span(_num(z, "+.2f"), className=f"zbar-value text-{color}"),
        ],
        className="d-flex align-items-center",
    )


def sparkline(values, threshold: float) -> str:
    """An SVG data URI: the series as a line, with dashed lines at ±θ when in view. Gaps (NaN)
    break the line. Empty when there is nothing to draw."""
    y = np.asarray(values, dtype=float)
    finite = y[np.isfinite(y)]
    if len(finite) < 2:
        return ""
    lo, hi = min(finite.min(), -threshold), max(finite.max(), threshold)
    scale = (SPARK_H - 2) / (hi - lo if hi > lo else 1.0)
    x_step = SPARK_W / max(len(y) - 1, 1)

    def ypos(v: float) -> float:
        return SPARK_H - 1 - (v - lo) * scale

    runs, run = [], []
    for i, v in enumerate(y):
        if math.isfinite(v):
            run.append(f"{i * x_step:.1f},{ypos(v):.1f}")
        elif run:
            runs.append(run)
            run = []
    runs.append(run)
    lines = "".join(
        f'<polyline points="{" ".join(r)}" fill="none" stroke="#0dcaf0" stroke-width="1.3"/>' for r in runs if r
    )
    bands = "".join(
        f'<line x1="0" x2="{SPARK_W}" y1="{ypos(b):.1f}" y2="{ypos(b):.1f}" stroke="#6c757d" stroke-dasharray="2,2"/>'
        for b in (-threshold, threshold)
    )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{SPARK_W}" height="{SPARK_H}">{bands}{lines}</svg>'
    return "data:image/svg+xml;utf8," + quote(svg)


def _cell(label: str, value, class_name: str = "") -> html.Div:
    """A cell, labelled on a phone (where each row is a card); the header labels it on a desktop."""
    return html.Div(
        [html.Span(label, className="book-label"), html.Span(value, className="book-value")],
        className=f"book-cell {class_name}".strip(),
    )


def header() -> html.Div:
    return html.Div([html.Div(c, className="book-cell") for c in COLUMNS], className="book-row book-header")


def book_row(row: dict, spark: str) -> dcc.Link:
    """A pair's row (GET /api/pairs's figures): a link to its Spread & z-score page."""
    state, half_life = row["state"], row["half_life_bars"]
    return dcc.Link(
        [
            _cell(
                COLUMNS[0],
                [
                    html.Strong(f"{row['a']}/{row['b']}"),
                    html.Small(f" {row['hedge']} · {row['tf']}", className="text-muted"),
                ],
            ),
            _cell(COLUMNS[1], f"{_num(row['price_a'], ',.8g')} / {_num(row['price_b'], ',.8g')}"),
            _cell(COLUMNS[2], z_bar(row["zscore"], row["threshold"]), "book-z"),
            _cell(COLUMNS[3], _num(row["spread"], ",.6g")),
            _cell(COLUMNS[4], _num(row["beta"], ".4g")),
            _cell(COLUMNS[5], _num(half_life, ",.1f") + (" bars" if half_life is not None else "")),
            _cell(COLUMNS[6], _num(row["adf_pvalue"], ".3f")),
            _cell(COLUMNS[7], html.Span(state, className=f"badge bg-{STATE_COLORS.get(state, 'secondary')}")),
            _cell(COLUMNS[8], _num(row["alerts_today"], "d")),
            _cell(
                COLUMNS[9], html.Img(src=spark, alt=f"z of {row['pair']}, last hour") if spark else "–", "book-spark"
            ),
        ],
        href=f"/analytics?pair={row['pair']}",
        className="book-row",
        title=f"Open {row['a']}/{row['b']} on Spread & z-score",
    )
