"""Pure builders for the AG Grid tables (ticks, alert log)."""
from __future__ import annotations

import dash_ag_grid as dag

from services.sources import iso_utc


DARK_THEME = ("themeAlpine.withParams({backgroundColor: '#1f242b', foregroundColor: '#dee2e6', "
              "headerBackgroundColor: '#262c34', borderColor: '#2c333c', accentColor: '#0dcaf0', "
              "fontSize: 13, rowHeight: 30, headerHeight: 34})")


def grid(component_id: str, columns: list[dict], empty_text: str, height: int = 360) -> dag.AgGrid:
    return dag.AgGrid(
        id=component_id, rowData=[], columnDefs=columns,
        defaultColDef={"resizable": True, "sortable": False, "flex": 1, "minWidth": 90},
        dashGridOptions={"animateRows": False, "suppressCellFocus": True,
                         "localeText": {"noRowsToShow": empty_text}, "theme": {"function": DARK_THEME}},
        style={"height": f"{height}px", "width": "100%"},
    )


TICK_COLUMNS = [
    {"field": "time_utc", "headerName": "Time (UTC)", "minWidth": 210},
    {"field": "symbol", "headerName": "Symbol"},
    {"field": "price", "headerName": "Price", "type": "rightAligned",
     "valueFormatter": {"function": "d3.format(',.8~f')(params.value)"}},
    {"field": "change", "headerName": "Δ prev", "type": "rightAligned",
     "cellClassRules": {"text-success": "params.value > 0", "text-danger": "params.value < 0"},
     "valueFormatter": {"function": "params.value == null ? '' : d3.format('+,.8~f')(params.value)"}},
]

ALERT_COLUMNS = [
    {"field": "time_utc", "headerName": "Time (UTC)", "minWidth": 190},
    {"field": "pair", "headerName": "Pair", "minWidth": 160},
    {"field": "direction", "headerName": "Crossed"},
    {"field": "zscore", "headerName": "z", "type": "rightAligned"},
    {"field": "spread", "headerName": "Spread", "type": "rightAligned"},
]


def tick_rows(ticks) -> list[dict]:
    """Ticks newest first, each with its change from the previous tick of the same symbol."""
    rows, older = [], {}
    for t in reversed(ticks):  # oldest first, to know each tick's predecessor
        prev = older.get(t.symbol)
        rows.append({"time_utc": iso_utc(t.time), "symbol": t.symbol,
                     "price": t.price, "change": None if prev is None else round(t.price - prev, 10)})
        older[t.symbol] = t.price
    rows.reverse()
    return rows
