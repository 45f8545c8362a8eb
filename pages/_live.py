"""What the pages' interval callbacks share: draw a live chart whole once, then send only the
new buckets (`extendData`), so a tick costs O(new buckets + window), not O(history).

A chart's `dcc.Store` remembers what it shows (`key`: chart, analysis parameters, threshold,
range), the last second drawn and the newest alert marked; any change of those, a new alert, or a
client that fell behind by more than the range gets a whole new figure. Charts of 1m+ bars are
redrawn whole each tick: their open bar changes in place, and they hold few points.
"""
from __future__ import annotations

from dash import Input, Output, State, callback, no_update

from components import figures, ids
from components.layout import RANGES
from services.market import MarketService, current_market

NO_CHANGE = (no_update, no_update, no_update)
MIN_BARS = 100  # with 1m+ bars a chart shows at least this many, whatever the range picked


def chart_update(kind: str, market: MarketService, range_name: str | None, state: dict | None):
    """(figure, extendData, new state) for one live chart; no_update where nothing changed."""
    settings = market.settings
    params = market.params(settings)
    range_s = max(RANGES.get(range_name or "", RANGES["15m"]), MIN_BARS * params.tf_s)
    end_s = int(market.clock())
    key = [kind, *params.pair, params.tf, params.hedge, params.window, params.log, settings.threshold, range_s,
           market.revision(params)]  # changes when the past was rewritten (a backfilled hole): redraw whole
    alert_id = market.alerts.last_id() if kind == "zscore" else 0  # a new alert: redraw with its marker
    last_s = (state or {}).get("last_s")
    new_state = {"key": key, "last_s": end_s, "alert_id": alert_id}
    same = state and state.get("key") == key and state.get("alert_id") == alert_id
    if same and params.tf_s == 1 and last_s is not None and 0 <= end_s - last_s < range_s:
        if end_s == last_s:
            return NO_CHANGE
        df = market.frame(last_s + 1, end_s, params)
        payload = figures.extend_payload(df, figures.trace_columns(kind, params.pair), range_s)
        return no_update, payload, new_state
    df = market.frame(end_s - range_s + 1, end_s, params)
    ohlc = market.ohlc(end_s - range_s + 1, end_s, params) if kind == "price" else None
    alerts = market.alerts.log(settings.pair_label, since_s=end_s - range_s + 1) if kind == "zscore" else []
    fig = figures.chart_figure(kind, df, params, settings.threshold, alerts, ohlc)
    return fig, no_update, new_state


def register_live_chart(kind: str, graph_id: str, state_id: str, range_id: str) -> None:
    """The interval callback of one live chart (figure once, then extendData)."""

    @callback(
        Output(graph_id, "figure"), Output(graph_id, "extendData"), Output(state_id, "data"),
        Input(ids.INTERVAL, "n_intervals"), Input(range_id, "value"),
        State(state_id, "data"),
    )
    def update_chart(_n, range_name, state):
        market = current_market()
        market.refresh()
        return chart_update(kind, market, range_name, state)
