"""Scanner: candidate pairs among the exchange's symbols, ranked by cointegration.

A scan runs as a Dash background callback (a process of its own, services/scanner.py `run_job`):
the live pages keep their cores, the page shows its progress and can cancel it, and its result
is cached for every tab and the API until the timeframe's next bar closes.
"""

from __future__ import annotations

import logging

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html, no_update

from components.ids import Scanner as ID
from components.layout import button_group, error_text, ok_text
from components.tables import grid
from services import jobs
from services.market import current_market
from services.scanner import (
    DEFAULT_LOOKBACK,
    DEFAULT_QUOTE,
    DEFAULT_TF,
    DEFAULT_TOP,
    MAX_LOOKBACK,
    MAX_SYMBOLS,
    MIN_LOOKBACK,
    TIMEFRAMES,
    WEIGHT_BUDGET_PER_MIN,
    ScanError,
    ScanRequest,
    ScanResult,
    in_the_background,
    planned_weight,
    run_job,
)
from services.settings import SettingsError, pair_name, parse_pair
from services.sources import iso_utc

log = logging.getLogger(__name__)

PATH = "/scanner"
dash.register_page(__name__, path=PATH, name="Scanner", title="Scanner · Pair Monitor", order=4)

MODES = {"top": "Top by 24 h volume", "list": "These symbols"}
SKIPPED_SHOWN = 50

P_VALUE = {
    "function": "params.value == null ? '–' : params.value < 1e-4 ? d3.format('.2e')(params.value) : "
    "d3.format('.4f')(params.value)"
}
NUMBER = {"function": "params.value == null ? '–' : d3.format(',.4~f')(params.value)"}
COLUMNS = [
    {"field": "rank", "headerName": "#", "maxWidth": 70, "minWidth": 60},
    {"field": "pair", "headerName": "Pair (a-b)", "minWidth": 210},
    {"field": "eg_pvalue", "headerName": "EG p-value", "type": "rightAligned", "valueFormatter": P_VALUE},
    {"field": "johansen_trace", "headerName": "Johansen trace", "type": "rightAligned", "valueFormatter": NUMBER},
    {
        "field": "johansen_5pct",
        "headerName": "Johansen 5 %",
        "cellDataType": False,  # a verdict in words, not AG Grid's checkbox
        "valueFormatter": {"function": "params.value ? 'cointegrated' : 'not'"},
        "cellClassRules": {"text-success": "params.value"},
    },
    {"field": "beta", "headerName": "β (log)", "type": "rightAligned", "valueFormatter": NUMBER},
    {
        "field": "half_life_bars",
        "headerName": "Half-life (bars)",
        "type": "rightAligned",
        "valueFormatter": {"function": "params.value == null ? '∞' : d3.format(',.1f')(params.value)"},
    },
    {"field": "return_corr", "headerName": "Return corr", "type": "rightAligned", "valueFormatter": NUMBER},
    {"field": "bars", "headerName": "Bars", "type": "rightAligned", "maxWidth": 100},
    {"field": "add", "headerName": "", "cellRenderer": "AddToWatchlist", "sortable": False, "minWidth": 150},
]


def _field(label, component) -> dbc.InputGroup:
    return dbc.InputGroup([dbc.InputGroupText(label), component], size="sm", className="w-auto")


def layout(**_kwargs):
    market = current_market()
    last = market.scanner().last()
    return dbc.Container(
        [
            html.P(
                "Pairs among the exchange's symbols whose log prices move together: Engle–Granger (both "
                "directions, the better one kept: a is regressed on b), Johansen's trace test, the OLS β, the "
                "spread's half-life and the correlation of returns, over the closed bars both symbols have.",
                className="text-muted small mb-2",
            ),
            dbc.Card(dbc.CardBody(_controls()), className="mb-3"),
            html.Div(
                dbc.Progress(id=ID.PROGRESS, value=0, striped=True, animated=True, style={"height": "1.4rem"}),
                id=ID.PROGRESS_ROW,
                className="d-none mb-3",
            ),
            html.Div(id=ID.MSG, className="mb-2"),
            html.Div(id=ID.ADD_MSG, className="mb-2"),
            html.Div(
                _summary(last) if last else "No scan yet: pick a universe and press Scan.",
                id=ID.SUMMARY,
                className="small mb-2",
            ),
            _results(last),
            html.Details(
                [html.Summary("Skipped", className="small text-muted"), html.Div(id=ID.SKIPPED, className="small")],
                className="mt-2",
            ),
        ],
        fluid=True,
    )


def _results(last: ScanResult | None):
    table = grid(ID.RESULTS, COLUMNS, "No scan yet", height=520)
    table.rowData = _rows(last) if last else []
    table.defaultColDef = {**table.defaultColDef, "sortable": True}
    return table


def _controls() -> list:
    return [
        dbc.Row(
            [
                dbc.Col(button_group(ID.MODE, MODES, "top", labels=MODES), width="auto"),
                dbc.Col(
                    _field(
                        "Top",
                        dbc.Input(
                            id=ID.TOP,
                            type="number",
                            value=DEFAULT_TOP,
                            min=2,
                            max=MAX_SYMBOLS,
                            step=1,
                            style={"maxWidth": "80px"},
                        ),
                    ),
                    width="auto",
                ),
                dbc.Col(
                    _field(
                        "Quote", dbc.Input(id=ID.QUOTE, value=DEFAULT_QUOTE, maxLength=10, style={"maxWidth": "90px"})
                    ),
                    width="auto",
                ),
                dbc.Col(
                    dbc.Textarea(
                        id=ID.SYMBOLS,
                        placeholder="BTCUSDT, ETHUSDT, SOLUSDT, …",
                        rows=1,
                        maxLength=2_000,
                        className="form-control-sm",
                        style={"minWidth": "260px"},
                    ),
                    className="flex-grow-1",
                ),
            ],
            className="g-2 mb-2 align-items-center",
        ),
        dbc.Row(
            [
                dbc.Col(
                    [
                        html.Span("Timeframe", className="me-2 text-muted small"),
                        button_group(ID.TIMEFRAME, TIMEFRAMES, DEFAULT_TF),
                    ],
                    width="auto",
                    className="d-flex align-items-center",
                ),
                dbc.Col(
                    _field(
                        "Lookback",
                        dbc.Input(
                            id=ID.LOOKBACK,
                            type="number",
                            value=DEFAULT_LOOKBACK,
                            min=MIN_LOOKBACK,
                            max=MAX_LOOKBACK,
                            step=1,
                            style={"maxWidth": "90px"},
                        ),
                    ),
                    width="auto",
                ),
                dbc.Col(html.Span("bars", className="text-muted small"), width="auto"),
                dbc.Col(dbc.Button("Scan", id=ID.SCAN, color="info", size="sm"), width="auto"),
                dbc.Col(
                    dbc.Button("Cancel", id=ID.CANCEL, color="secondary", outline=True, size="sm", disabled=True),
                    width="auto",
                ),
            ],
            className="g-2 align-items-center",
        ),
        html.Div(id=ID.BUDGET, className="small text-muted mt-2"),
    ]


def _request(mode, quote, top, symbols, tf, lookback) -> ScanRequest:
    """The request the controls describe (validated as the API validates). Raises ScanError."""
    args = {"tf": tf, "lookback": "" if lookback is None else lookback}
    if mode == "list":
        args["symbols"] = symbols or ""
        if not str(args["symbols"]).strip():
            raise ScanError("Type at least two symbols, e.g. BTCUSDT, ETHUSDT")
    else:
        args.update(quote=quote or "", top="" if top is None else top)
    return current_market().scan_request(args)


def _summary(result: ScanResult) -> str:
    n = len(result.symbols)
    skipped = len(result.skipped)
    weight = f" · request weight {result.weight:,}" if result.weight else ""
    return (
        f"{result.request.universe}: {n} symbols, {len(result.rows)} of {n * (n - 1) // 2} pairs tested"
        f"{f', {skipped} skipped' if skipped else ''} · {result.request.tf} × {result.request.lookback} bars · "
        f"{result.source} · computed {iso_utc(result.computed_at)[:19]}Z in {result.elapsed_s:.1f} s{weight}"
    )


def _rows(result: ScanResult) -> list[dict]:
    return [{"rank": i + 1, **row} for i, row in enumerate(result.as_json()["rows"])]


def _skipped(result: ScanResult) -> list:
    more = len(result.skipped) - SKIPPED_SHOWN
    items = [html.Li(s) for s in result.skipped[:SKIPPED_SHOWN]]
    return [html.Ul(items, className="mb-0")] + ([html.Div(f"… and {more} more")] if more > 0 else [])


@callback(
    Output(ID.BUDGET, "children"),
    Output(ID.SYMBOLS, "disabled"),
    Output(ID.TOP, "disabled"),
    Output(ID.QUOTE, "disabled"),
    Input(ID.MODE, "value"),
    Input(ID.QUOTE, "value"),
    Input(ID.TOP, "value"),
    Input(ID.SYMBOLS, "value"),
    Input(ID.TIMEFRAME, "value"),
    Input(ID.LOOKBACK, "value"),
)
def budget(mode, quote, top, symbols, tf, lookback):
    """What the scan will cost, said before it runs (or what is wrong with the request)."""
    listed = mode == "list"
    try:
        req = _request(mode, quote, top, symbols, tf, lookback)
    except ScanError as exc:
        return html.Span(str(exc), className="text-warning"), not listed, listed, listed
    source = current_market().source()
    n = len(req.symbols) or req.top
    weight = planned_weight(source, req, n)
    pairs = n * (n - 1) // 2
    universe = f"{n} symbols, {pairs} pairs" if req.symbols else f"Up to {n} symbols ({pairs} pairs)"
    cost = (
        f"Request weight about {weight:,}, within the scanner's budget of {WEIGHT_BUDGET_PER_MIN:,} a minute "
        f"(Binance allows 6,000 a minute per IP)"
        if source.request_weight
        else f"{source.label}: no request weight"
    )
    return f"{universe}. {cost}.", not listed, listed, listed


def _failed(exc: Exception) -> tuple:
    """What a scan that could not run or raised says: never nothing (a pressed Scan that came to
    nothing), never its traceback (that goes to the log)."""
    if jobs.unreachable(exc):
        message = "Scans run on the job workers through Redis, which is not answering: try again when it is back"
    else:
        log.error("the scan failed: %s", exc)
        message = "The scan failed; the server's log says why"
    return no_update, no_update, no_update, error_text(message)


@callback(
    Output(ID.RESULTS, "rowData"),
    Output(ID.SUMMARY, "children"),
    Output(ID.SKIPPED, "children"),
    Output(ID.MSG, "children"),
    Input(ID.SCAN, "n_clicks"),
    State(ID.MODE, "value"),
    State(ID.QUOTE, "value"),
    State(ID.TOP, "value"),
    State(ID.SYMBOLS, "value"),
    State(ID.TIMEFRAME, "value"),
    State(ID.LOOKBACK, "value"),
    background=True,
    running=[
        (Output(ID.SCAN, "disabled"), True, False),
        (Output(ID.CANCEL, "disabled"), False, True),
        (Output(ID.PROGRESS_ROW, "className"), "mb-3", "d-none"),
    ],
    cancel=[Input(ID.CANCEL, "n_clicks")],
    progress=[Output(ID.PROGRESS, "value"), Output(ID.PROGRESS, "label")],
    progress_default=[0, ""],
    interval=500,
    prevent_initial_call=True,
    on_error=_failed,
)
def scan(set_progress, _n, mode, quote, top, symbols, tf, lookback):
    """Run (or reuse) the scan the controls describe, in the background job's process."""
    in_the_background()
    try:
        req = _request(mode, quote, top, symbols, tf, lookback)
        market = current_market()

        def report(done: int, total: int, text: str) -> None:
            set_progress((round(100 * done / max(total, 1)), text))

        result = run_job(market.scanner(own_connection=True), req, report)
    except ScanError as exc:
        return no_update, no_update, no_update, error_text(str(exc))
    return _rows(result), _summary(result), _skipped(result), None


@callback(
    Output(ID.MSG, "children", allow_duplicate=True),
    Input(ID.CANCEL, "n_clicks"),
    prevent_initial_call=True,
)
def cancelled(_n):
    return dbc.Alert("Scan cancelled.", color="secondary", className="py-2 mb-0 small", duration=6000)


@callback(
    Output(ID.ADD_MSG, "children"),
    Input(ID.RESULTS, "cellRendererData"),
    prevent_initial_call=True,
)
def add_to_watchlist(clicked):
    """A row's "Add to watchlist": the pair as the row orders it (a regressed on b), analysed on
    log prices as the scanner tested it (the rest of its analysis and rules from the first pair)."""
    value = clicked.get("value") if isinstance(clicked, dict) else None
    try:
        a, b = parse_pair(value if isinstance(value, str) else "")
        market = current_market()
        added = market.add_pair(a, b)
        market.save_settings({"log_prices": True}, pair=added.pair)
    except SettingsError as exc:
        return error_text(str(exc))
    name = pair_name(added.pair)
    return ok_text(
        [
            f"Added {added.pair_label} to the watchlist, on log prices as scanned. ",
            dcc.Link("Open it", href=f"/analytics?pair={name}"),
        ]
    )
