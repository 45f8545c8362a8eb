"""What the pages' interval callbacks share: draw a live chart whole once, then send only the
new buckets (`extendData`), so a tick costs O(new buckets + window), not O(history).

A chart's `dcc.Store` remembers what it shows (`key`: chart, pair, window, threshold, range),
the last second drawn and the newest alert marked; any change of those, a new alert, or a client
that fell behind by more than the range gets a whole new figure.
"""
from __future__ import annotations

from dash import no_update

from components import figures
from components.layout import RANGES
from services.market import MarketService

NO_CHANGE = (no_update, no_update, no_update)


def chart_update(kind: str, market: MarketService, range_name: str | None, state: dict | None):
    """(figure, extendData, new state) for one live chart; no_update where nothing changed."""
    settings = market.settings
    range_s = RANGES.get(range_name or "", RANGES["15m"])
    end_s = int(market.clock())
    key = [kind, *settings.pair, settings.window, settings.threshold, range_s]
    alerts = market.alerts.log(settings.pair_label) if kind == "zscore" else []
    alert_s = max((a.time.timestamp() for a in alerts), default=0)
    last_s = (state or {}).get("last_s")
    new_state = {"key": key, "last_s": end_s, "alert_s": alert_s}
    same = state and state.get("key") == key and state.get("alert_s") == alert_s
    if same and last_s is not None and 0 <= end_s - last_s < range_s:
        if end_s == last_s:
            return NO_CHANGE
        df = market.frame(last_s + 1, end_s)
        payload = figures.extend_payload(df, figures.trace_columns(kind, settings.pair), range_s)
        return no_update, payload, new_state
    df = market.frame(end_s - range_s + 1, end_s)
    fig = figures.chart_figure(kind, df, settings.pair, settings.window, settings.threshold, alerts)
    return fig, no_update, new_state
