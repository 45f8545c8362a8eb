"""Pure figure builders: analytics frame in, `go.Figure` out. No data access, no callbacks.

Each live figure is built whole once (on first paint or when what it shows changes); after that
a tab gets `tail_payload`s, which replace the chart's bars from a given time on, trace by trace
in the order the builder made them (`trace_columns` says that order). x values are UTC
wall-clock times as ISO text (plotly has no time zones; the browser splices tails by comparing
them), and every time axis says UTC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

SCATTERGL_ABOVE = 10_000
COLORS = {
    "a": "#f7931a",
    "b": "#627eea",
    "spread": "#20c997",
    "mean": "#adb5bd",
    "z": "#0dcaf0",
    "band": "#dc3545",
    "alert": "#ffc107",
}
UIREVISION = "live"  # constant: zoom and pan survive every update
CHART_KINDS = ("price", "spread", "zscore", "beta")


def trace_columns(kind: str, pair: tuple[str, str]) -> tuple[str, ...]:
    """Frame columns behind a chart's line traces, in trace order."""
    return {"price": pair, "spread": ("spread", "mean"), "zscore": ("zscore",), "beta": ("beta", "alpha")}[kind]


def describe(params) -> str:
    """'kalman hedge · log prices · 1m bars' for titles."""
    parts = [f"{params.hedge} hedge" if params.hedge != "none" else "β = 1"]
    if params.log:
        parts.append("log prices")
    parts.append(f"{params.tf} bars")
    return " · ".join(parts)


X_FORMAT = "%Y-%m-%dT%H:%M:%S"


def utc_x(times) -> list[str]:
    """UTC wall-clock times (a DatetimeIndex, or epoch seconds), to the second, as ISO text
    without a zone (plotly draws them as given), e.g. 2025-10-22T00:00:05."""
    if isinstance(times, pd.DatetimeIndex):
        values = times.tz_convert("UTC").tz_localize(None).to_numpy()
    else:
        values = np.asarray(times, dtype=np.int64).astype("datetime64[s]")
    return np.datetime_as_string(values, unit="s").tolist()


def _values(series) -> list:
    """Plain lists, not numpy: plotly would send numpy as a typed-array spec, which the
    browser's tail splice cannot extend. NaN (a break in the line) is sent as null."""
    return np.asarray(series, dtype=float).tolist()


def _hline(y: float, color: str, dash: str = "solid", width: float = 1.0) -> dict:
    return {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": y,
        "y1": y,
        "line": {"color": color, "dash": dash, "width": width},
    }


def _line(x, y, name, color, n, yaxis="y", width=1.6):
    cls = go.Scattergl if n > SCATTERGL_ABOVE else go.Scatter
    return cls(
        x=x,
        y=y,
        name=name,
        mode="lines",
        line={"color": color, "width": width},
        yaxis=yaxis,
        connectgaps=False,
        hovertemplate="%{y:,.6g}<extra>" + name + "</extra>",
    )


def _layout(fig: go.Figure, title: str, export_name: str, yaxis_title: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_dark",
        paper_bgcolor="#1f242b",
        plot_bgcolor="#161a1f",
        margin={"l": 60, "r": 60, "t": 40, "b": 78},
        height=370,
        uirevision=UIREVISION,
        legend={"orientation": "h", "y": -0.3, "x": 0, "xanchor": "left", "yanchor": "top"},
        hovermode="x unified",
        meta={"export_name": export_name},
        xaxis={"title": {"text": "time (UTC)"}, "type": "date", "gridcolor": "#263040"},
        yaxis={"title": {"text": yaxis_title}, "gridcolor": "#263040", "tickformat": ",.6~g"},
    )
    return fig


def _candles(ohlc: pd.DataFrame, symbol: str, color: str, yaxis: str) -> go.Candlestick:
    return go.Candlestick(
        x=utc_x(ohlc.index),
        open=_values(ohlc[f"{symbol} open"]),
        high=_values(ohlc[f"{symbol} high"]),
        low=_values(ohlc[f"{symbol} low"]),
        close=_values(ohlc[f"{symbol} close"]),
        name=symbol,
        yaxis=yaxis,
        increasing={"line": {"color": color}, "fillcolor": color},
        decreasing={"line": {"color": color}, "fillcolor": "rgba(0,0,0,0)"},
    )


def price_figure(df: pd.DataFrame, pair: tuple[str, str], ohlc: pd.DataFrame | None = None) -> go.Figure:
    """Both symbols' prices, each on its own axis (their levels differ 30-fold): lines of bucket
    prices, or candles (filled: up, hollow: down) when `ohlc` bars are given."""
    a, b = pair
    if ohlc is not None:
        fig = go.Figure([_candles(ohlc, a, COLORS["a"], "y"), _candles(ohlc, b, COLORS["b"], "y2")])
        fig.update_layout(xaxis_rangeslider_visible=False)
    else:
        x, n = utc_x(df.index), len(df)
        fig = go.Figure(
            [_line(x, _values(df[a]), a, COLORS["a"], n), _line(x, _values(df[b]), b, COLORS["b"], n, "y2")]
        )
    _layout(fig, f"Prices · {a} (left) / {b} (right)", f"price_{a}-{b}", a)
    fig.update_layout(
        yaxis2={"title": {"text": b}, "overlaying": "y", "side": "right", "showgrid": False, "tickformat": ",.6~g"}
    )
    return fig


def spread_figure(df: pd.DataFrame, params) -> go.Figure:
    a, b = params.pair
    x, n = utc_x(df.index), len(df)
    fig = go.Figure(
        [
            _line(x, _values(df["spread"]), "spread", COLORS["spread"], n),
            _line(x, _values(df["mean"]), f"mean ({params.window})", COLORS["mean"], n, width=1.2),
        ]
    )
    fig.data[1].line.dash = "dot"
    legs = f"{a} − {b}" if params.hedge == "none" else f"{a} − (β·{b} + α)"
    if params.log:
        legs = legs.replace(a, f"ln {a}").replace(b, f"ln {b}")
    return _layout(
        fig, f"Spread {legs} with its {params.window}-bar mean · {describe(params)}", f"spread_{a}-{b}", "spread"
    )


def beta_figure(df: pd.DataFrame, params) -> go.Figure:
    """The hedge ratio β (left) and intercept α (right) over time."""
    a, b = params.pair
    x, n = utc_x(df.index), len(df)
    fig = go.Figure(
        [
            _line(x, _values(df["beta"]), "β", COLORS["a"], n),
            _line(x, _values(df["alpha"]), "α", COLORS["mean"], n, "y2", width=1.2),
        ]
    )
    _layout(fig, f"Hedge ratio β and intercept α · {describe(params)}", f"beta_{a}-{b}", "β")
    fig.update_layout(
        height=260,
        yaxis2={"title": {"text": "α"}, "overlaying": "y", "side": "right", "showgrid": False, "tickformat": ",.6~g"},
    )
    return fig


def alert_markers(alerts) -> dict:
    """x and y of the z chart's alert markers: one per z alert, at its bar and z."""
    z_alerts = [al for al in alerts if al.is_z]
    return {"x": [al.time.strftime(X_FORMAT) for al in z_alerts], "y": [al.zscore for al in z_alerts]}


def zscore_figure(df: pd.DataFrame, params, threshold: float, alerts=()) -> go.Figure:
    """z with ±threshold bands, and a marker at each bar where a z alert fired."""
    a, b = params.pair
    x, n = utc_x(df.index), len(df)
    markers = alert_markers(alerts)
    fig = go.Figure(
        [
            _line(x, _values(df["zscore"]), "z-score", COLORS["z"], n),
            go.Scatter(
                **markers,
                name="alert",
                mode="markers",
                marker={
                    "color": COLORS["alert"],
                    "size": 10,
                    "symbol": "diamond",
                    "line": {"color": "#000", "width": 1},
                },
                hovertemplate="alert z=%{y:.2f}<extra></extra>",
            ),
        ]
    )
    band = {
        "type": "rect",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": -threshold,
        "y1": threshold,
        "fillcolor": COLORS["band"],
        "opacity": 0.06,
        "line": {"width": 0},
        "layer": "below",
    }
    fig.update_layout(
        shapes=[
            _hline(threshold, COLORS["band"], "dash", 1.2),
            _hline(-threshold, COLORS["band"], "dash", 1.2),
            _hline(0, "#6c757d", width=0.8),
            band,
        ],
        annotations=[
            {
                "xref": "paper",
                "x": 1,
                "xanchor": "right",
                "yref": "y",
                "y": level,
                "yanchor": "bottom",
                "text": f"{level:+g}",
                "showarrow": False,
                "font": {"color": COLORS["band"], "size": 11},
            }
            for level in (threshold, -threshold)
        ],
    )
    return _layout(
        fig,
        f"Rolling z-score ({params.window} bars) · {describe(params)} · alert at |z| ≥ {threshold:g}",
        f"zscore_{a}-{b}",
        "z",
    )


def chart_figure(kind: str, df: pd.DataFrame, params, threshold: float, alerts=(), ohlc=None) -> go.Figure:
    """Any of `CHART_KINDS`, by name (pages and the PNG API share this). `params` is the
    analysis's `services.engine.Params` (pair, tf, hedge, window, log); `ohlc` turns the price
    chart into candles."""
    if kind == "price":
        return price_figure(df, params.pair, ohlc)
    if kind == "spread":
        return spread_figure(df, params)
    if kind == "beta":
        return beta_figure(df, params)
    return zscore_figure(df, params, threshold, alerts)


def equity_figure(times: pd.DatetimeIndex, equity, trades, params) -> go.Figure:
    """The backtest's equity curve (1 = start), with entries and exits marked."""
    a, b = params.pair
    x = utc_x(times)
    fig = go.Figure([_line(x, list(np.asarray(equity, float)), "equity", COLORS["spread"], len(times))])
    for key, name, symbol, color in (
        ("entry_time", "entry", "triangle-up", COLORS["a"]),
        ("exit_time", "exit", "x", COLORS["b"]),
    ):
        pts = [t[key] for t in trades if t[key] is not None]
        when = pd.to_datetime(pts, utc=True)
        pos = times.get_indexer(when)
        fig.add_trace(
            go.Scatter(
                x=utc_x(when),
                y=[float(equity[i]) for i in pos],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 8, "color": color},
            )
        )
    return _layout(fig, f"Backtest equity · {a} − β·{b} · {describe(params)}", f"backtest_{a}-{b}", "equity")


def tail_payload(kind: str, bars, params, keep_from_s: int, ohlc: pd.DataFrame | None = None, alerts=None) -> dict:
    """What a chart drawn whole earlier needs to be up to date: the bars (from the first bar that
    may have changed; `bars` = (open times, columns) as `PairEngine.arrays` gives them: no
    DataFrame for a few bars), which replace the chart's bars from that time on, per trace in
    trace order; then bars before `keep_from_s` (the range's start) are dropped. The z chart's
    alert markers (`alerts` of its range, a few) replace its marker trace whole."""
    if ohlc is not None:
        x = utc_x(ohlc.index)
        traces = [{f: _values(ohlc[f"{sym} {f}"]) for f in ("open", "high", "low", "close")} for sym in params.pair]
    else:
        times, cols = bars
        x = utc_x(times)
        legs = dict(zip(params.pair, ("a", "b")))  # the engine's names of the legs' prices
        traces = [{"y": _values(cols[legs.get(c, c)])} for c in trace_columns(kind, params.pair)]
    update = {"x": x, "traces": traces, "keep_from": pd.Timestamp(keep_from_s, unit="s").strftime(X_FORMAT)}
    if alerts is not None:
        update["replace"] = {len(traces): alert_markers(alerts)}
    return update
