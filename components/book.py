"""Pure builders for the overview of the watchlist: one row per pair (a card on a phone), the z
bar against ±θ, and the sparkline of the last hour of z. The rows travel as plain data and are
drawn in the browser (assets/book.js)."""

from __future__ import annotations

import math
from urllib.parse import quote

import numpy as np
from dash import html

STATE_COLORS = {"live": "success", "waiting": "secondary", "stale": "danger", "disconnected": "danger"}
COLUMNS = ("Pair", "Last prices", "z", "Spread", "β", "Half-life", "ADF p", "State", "Alerts today", "z, last hour")
SPARK_W, SPARK_H = 120, 28
SPARK_S = 3_600  # the sparkline's span
SPARK_POINTS = 120  # one every 30 s
SPARK_EVERY_S = SPARK_S // SPARK_POINTS


def _num(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def z_color(z: float | None, threshold: float) -> str:
    """danger at or beyond ±θ, warning past half of it, else muted (no signal)."""
    if z is None:
        return "secondary"
    return "danger" if abs(z) >= threshold else "warning" if abs(z) >= threshold / 2 else "success"


def z_view(z: float | None, threshold: float) -> dict:
    """z as a bar from the centre line on a scale of ±2θ (ticks at ±θ): its colour, its fill and
    its text."""
    color = z_color(z, threshold)
    fill = {}
    if z is not None:
        share = max(-1.0, min(1.0, z / (2 * threshold))) * 50  # % of the track's width
        fill = {"left": f"{50 + min(share, 0):.1f}%", "width": f"{abs(share):.1f}%"}
    title = f"z against ±θ = ±{threshold:g} (the bar spans ±{2 * threshold:g})"
    return {"color": color, "fill": fill, "text": _num(z, "+.2f"), "title": title}


def spark_points(seconds: np.ndarray, z: np.ndarray, end_s: int, bar_s: int) -> np.ndarray:
    """The z of bars opened at `seconds` (ascending) in the hour up to `end_s`, one point per
    slot of the hour (SPARK_EVERY_S wide, or a bar wide if bars are longer): the slot's last bar.
    A slot with no bar is NaN, a gap in the line: an hour not yet recorded shows as a gap on the
    left, never stretched across the width."""
    every = max(SPARK_EVERY_S, bar_s)
    points = np.full(SPARK_S // every, np.nan)
    slot = (seconds - (end_s - SPARK_S + 1)) // every
    inside = (slot >= 0) & (slot < len(points))
    slot, z = slot[inside], z[inside]
    last = np.r_[slot[1:] != slot[:-1], True] if len(slot) else np.zeros(0, bool)
    points[slot[last]] = z[last]
    return points


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


def header() -> html.Div:
    return html.Div([html.Div(c, className="book-cell") for c in COLUMNS], className="book-row book-header")


def row_view(row: dict, spark: str) -> dict:
    """What the browser draws for a pair's row (assets/book.js: a link to the pair's Spread &
    z-score page, one labelled cell per column), from its GET /api/pairs figures: plain strings,
    one cheap encoding for every tab, where components would cost a call per property."""
    state, half_life = row["state"], row["half_life_bars"]
    cells = [
        {"pair": f"{row['a']}/{row['b']}", "sub": f"{row['hedge']} · {row['tf']}"},
        {"text": f"{_num(row['price_a'], ',.8g')} / {_num(row['price_b'], ',.8g')}"},
        {"z": z_view(row["zscore"], row["threshold"]), "cls": "book-z"},
        {"text": _num(row["spread"], ",.6g")},
        {"text": _num(row["beta"], ".4g")},
        {"text": _num(half_life, ",.1f") + (" bars" if half_life is not None else "")},
        {"text": _num(row["adf_pvalue"], ".3f")},
        {"badge": state, "color": STATE_COLORS.get(state, "secondary")},
        {"text": _num(row["alerts_today"], "d")},
        {"spark": spark, "alt": f"z of {row['pair']}, last hour", "cls": "book-spark"},
    ]
    return {
        "href": f"/analytics?pair={row['pair']}",
        "title": f"Open {row['a']}/{row['b']} on Spread & z-score",
        "cells": [{"label": label, **cell} for label, cell in zip(COLUMNS, cells)],
    }
