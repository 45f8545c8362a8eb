"""Pure builders for the AG Grid tables (ticks, alert log)."""

from __future__ import annotations

import functools

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
from dash import html

from services.sources import iso_utc

DARK_THEME = (
    "themeAlpine.withParams({backgroundColor: '#1f242b', foregroundColor: '#dee2e6', "
    "headerBackgroundColor: '#262c34', borderColor: '#2c333c', accentColor: '#0dcaf0', "
    "fontSize: 13, rowHeight: 30, headerHeight: 34})"
)


def table_card(title: str, component_id: str, columns: list[dict], empty_text: str, height: int = 360) -> dbc.Card:
    """A titled card holding one grid."""
    return dbc.Card(
        dbc.CardBody([html.H6(title, className="card-title"), grid(component_id, columns, empty_text, height)]),
        className="mb-3",
    )


def grid(component_id: str, columns: list[dict], empty_text: str, height: int = 360) -> dag.AgGrid:
    return dag.AgGrid(
        id=component_id,
        rowData=[],
        columnDefs=columns,
        defaultColDef={"resizable": True, "sortable": False, "flex": 1, "minWidth": 90},
        dashGridOptions={
            "animateRows": False,
            "suppressCellFocus": True,
            "localeText": {"noRowsToShow": empty_text},
            "theme": {"function": DARK_THEME},
        },
        style={"height": f"{height}px", "width": "100%"},
    )


TICK_COLUMNS = [
    {"field": "time_utc", "headerName": "Time (UTC)", "minWidth": 210},
    {"field": "symbol", "headerName": "Symbol"},
    {
        "field": "price",
        "headerName": "Price",
        "type": "rightAligned",
        "valueFormatter": {"function": "d3.format(',.8~f')(params.value)"},
    },
    {
        "field": "change",
        "headerName": "Δ prev",
        "type": "rightAligned",
        "cellClassRules": {"text-success": "params.value > 0", "text-danger": "params.value < 0"},
        "valueFormatter": {"function": "params.value == null ? '' : d3.format('+,.8~f')(params.value)"},
    },
]

ALERT_COLUMNS = [
    {"field": "time_utc", "headerName": "Time (UTC)", "minWidth": 190},
    {"field": "pair", "headerName": "Pair", "minWidth": 160},
    {"field": "rule", "headerName": "Rule", "minWidth": 200},
    {"field": "value", "headerName": "Value", "type": "rightAligned"},
    {"field": "zscore", "headerName": "z", "type": "rightAligned"},
    {"field": "spread", "headerName": "Spread", "type": "rightAligned"},
]


@functools.lru_cache(maxsize=4096)
def _shown_time(when) -> str:
    """`iso_utc`, once per tick: each tick stays in the table for a minute of ticks."""
    return iso_utc(when)


def tick_rows(ticks) -> dict:
    """Ticks newest first, each with its change from the previous tick of the same symbol, as
    columns of numpy arrays ({"columns": {field: array}}): Dash encodes an array in one step,
    where a list of row dicts costs a call per cell, on every tab's tick. `assets/tick.js` turns
    them into the grid's rows; a missing change (a symbol's first tick) is NaN, sent as null."""
    times, symbols, prices, changes, older = [], [], [], [], {}
    for t in reversed(ticks):  # oldest first, to know each tick's predecessor
        prev = older.get(t.symbol)
        times.append(_shown_time(t.time))
        symbols.append(t.symbol)
        prices.append(t.price)
        changes.append(np.nan if prev is None else round(t.price - prev, 10))
        older[t.symbol] = t.price
    columns = {"time_utc": times, "symbol": symbols, "price": prices, "change": changes}
    return {"columns": {field: np.array(values[::-1]) for field, values in columns.items()}}


TRADE_COLUMNS = [
    {"field": "entry_time", "headerName": "Entry (UTC)", "minWidth": 200},
    {"field": "exit_time", "headerName": "Exit (UTC)", "minWidth": 200},
    {"field": "side", "headerName": "Side"},
    {"field": "entry_z", "headerName": "z at signal", "type": "rightAligned"},
    {"field": "beta", "headerName": "β", "type": "rightAligned"},
    {"field": "exit_reason", "headerName": "Exit"},
    {
        "field": "return_pct",
        "headerName": "Return %",
        "type": "rightAligned",
        "cellClassRules": {"text-success": "params.value > 0", "text-danger": "params.value < 0"},
    },
    {"field": "bars", "headerName": "Bars", "type": "rightAligned"},
]


def trade_rows(trades) -> list[dict]:
    """Backtest trades, newest first, as table rows (and CSV rows)."""
    return [
        {
            "entry_time": t["entry_time"],
            "exit_time": t["exit_time"] or "open",
            "side": t["side"],
            "entry_z": round(t["entry_z"], 3),
            "beta": round(t["beta"], 6),
            "exit_reason": t["exit_reason"],
            "return_pct": round(t["ret"] * 100, 4),
            "bars": t["bars"],
        }
        for t in reversed(trades)
    ]
