"""HTTP API (a Flask blueprint on the Dash server): health, CSV exports, server-side PNG charts.

Every parameter is validated; bad ones get a 400 with one-line JSON `{"error": "..."}`, and no
traceback ever reaches a client.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, fields, replace

from flask import Blueprint, Response, g, jsonify, make_response, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.http import http_date

from components import figures
from components.tables import TRADE_COLUMNS, trade_rows
from pages._tick import PUSHES
from services import limits, memory, metrics
from services.alerting import TooSoonForTestAlert
from services.analysis import TooMuchWork
from services.auth import NotAnEditor
from services.backtest import parse_params as parse_backtest
from services.bars import TIMEFRAMES
from services.export import PngRenderer, RendererUnavailable
from services.hedge import METHODS
from services.market import current_market
from services.notify import DELIVERY_HEADER
from services.scanner import COLUMNS, ScanError, busy_with_another
from services.settings import (
    DatabaseDown,
    SettingsError,
    UserSettings,
    pair_name,
    parse_bool,
    parse_choice,
    parse_pair,
    parse_symbol,
    parse_threshold,
    parse_window,
    shown,
    shown_webhook,
)
from services.singleflight import SingleFlight
from services.sources import iso_utc

log = logging.getLogger(__name__)
MAX_TICKS = 10_000
MAX_ALERTS = 10_000
DEFAULT_SECONDS = 3_600
SETTINGS_FIELDS = frozenset(f.name for f in fields(UserSettings))
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 2_000  # CSV answers are streamed in pieces of this many rows
EXPORT_SLOTS = 2  # exports (CSV, PNG) computed or sent at once per process; the rest wait...
EXPORT_WAIT_S = 30.0  # ...this long for a slot (in line), then get a 503 with Retry-After
SCAN_WAIT_S = 20.0  # /api/scan waits this long for a scan it started, then answers 202
PUSH_SLOTS = 32  # pages pushed to at once per process (each holds a server thread)
PUSH_MAX_S = 300  # a push stream ends after this; the browser connects again
PUSH_EVERY_S = 0.2  # at most this often an event (trades in between are coalesced)
PUSH_KEEPALIVE_S = 15  # a comment line this often when nothing changes (a gone browser frees its thread)
PUSH_RETRY_MS = 1_000  # the browser waits this long before it connects again
SCAN_POLL_S = 0.25


def csv_text(value):
    """A text cell that a spreadsheet will not run as a formula (CSV injection): a leading
    =, +, -, @, tab or CR gets a ' in front. Numbers are written as numbers, untouched."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def held_slots(slots: threading.BoundedSemaphore, wait_s: float, busy: str, retry_after_s: int):
    """A decorator that runs a route in one of `slots`, held until its answer is sent (a streamed
    one included): a flood of big exports queues (for `wait_s`, then a 503 saying `busy`) instead
    of starving the ticks and /api/health of CPU and memory, and open push streams are bounded."""

    def exporting(view):
        @functools.wraps(view)
        def in_a_slot(*args, **kwargs):
            if not slots.acquire(timeout=wait_s):
                return jsonify(error=busy), 503, {"Retry-After": str(retry_after_s)}
            try:
                resp = make_response(view(*args, **kwargs))
            except BaseException:
                slots.release()
                raise
            if not resp.is_streamed:
                slots.release()  # computed and in memory: the work is done
                return resp
            once = threading.Lock()

            def release() -> None:
                if once.acquire(blocking=False):  # the stream's end or the close, whichever comes first
                    slots.release()
                    memory.give_back()

            def sent(chunks):
                try:
                    yield from chunks
                finally:
                    release()

            resp.response = sent(resp.response)
            resp.call_on_close(release)  # a client that hangs up before the first chunk
            return resp

        return in_a_slot

    return exporting


class BadRequest(ValueError):
    pass


def create_api(renderer: PngRenderer, limiter: Limiter) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")
    exports, scans = limiter.limit(limits.EXPORTS), limiter.limit(limits.SCANS)
    test_alerts, changes = limiter.limit(limits.TEST_ALERTS), limiter.limit(limits.CHANGES)
    exporting = held_slots(  # this app's, in this process
        threading.BoundedSemaphore(EXPORT_SLOTS),
        EXPORT_WAIT_S,
        f"{EXPORT_SLOTS} exports are already running; try again in a few seconds",
        2,
    )
    push_events = SingleFlight(max_entries=16, ttl_s=5.0)  # apart from the pages' memo: many, short-lived
    pushing = held_slots(
        threading.BoundedSemaphore(PUSH_SLOTS),
        0,
        f"{PUSH_SLOTS} pages are already pushed to by this server; the page updates on its tick",
        30,
    )

    @api.errorhandler(BadRequest)
    @api.errorhandler(SettingsError)
    @api.errorhandler(TooMuchWork)
    def bad_request(exc):
        return jsonify(error=str(exc)), 400

    @api.errorhandler(RateLimitExceeded)
    def too_many(exc):
        wait = limits.retry_after_s(limiter)
        return (
            jsonify(error=f"too many requests ({exc.description}); try again in {wait} s"),
            429,
            {"Retry-After": str(wait)},
        )

    @api.errorhandler(DatabaseDown)
    def database_down(exc):
        return jsonify(error=str(exc)), 503, {"Retry-After": "5"}

    @api.errorhandler(NotAnEditor)
    def not_an_editor(exc):
        return jsonify(error=str(exc)), 403

    @api.errorhandler(ScanError)
    def scan_failed(exc):
        return jsonify(error=str(exc)), exc.status, {"Retry-After": "5"} if exc.status == 503 else {}

    @api.errorhandler(HTTPException)
    def http_error(exc):
        return jsonify(error=exc.description), exc.code

    @api.errorhandler(Exception)
    def internal_error(exc):
        log.exception("API error")
        return jsonify(error="internal error; see the server log"), 500

    @api.before_request
    def refresh_market():
        """Every route answers from fresh data (at most one upstream poll per interval), read
        through one snapshot."""
        g.snap = current_market().tick()

    @api.get("/health")
    def health():
        """200 while the data is fresh (or not yet in); 503 when stale or failing, for monitors."""
        status = g.snap.status
        return jsonify(status.as_dict()), 503 if status.unhealthy else 200

    def settings_body(saved) -> dict:
        """Settings as the API shows them: the webhook by its origin only (its path often holds a token)."""
        return {**asdict(saved), "webhook_url": shown_webhook(saved.webhook_url)}

    @api.get("/settings")
    def settings():
        """The saved settings (edited on /settings), alert rules included."""
        return jsonify(settings_body(g.snap.settings))

    @api.patch("/settings")
    @changes
    def change_settings():
        """Change any of the Settings page's fields (JSON object), with the page's validation:
        200 with the saved settings, or 400 naming the field, and nothing saved."""
        raw = request.get_json(silent=True)
        if not isinstance(raw, dict) or not raw:
            raise BadRequest('send a JSON object with the fields to change, e.g. {"threshold": 2.5}')
        unknown = sorted(set(raw) - SETTINGS_FIELDS)
        if unknown:
            raise BadRequest(f"unknown field {shown(unknown[0])}; the fields are {', '.join(sorted(SETTINGS_FIELDS))}")
        market = current_market()
        if raw.get("webhook_url") == shown_webhook(market.current_settings().webhook_url):
            del raw["webhook_url"]  # the shown form sent back (a GET's body PATCHed as is): unchanged
        return jsonify(settings_body(market.save_settings(raw)))

    @api.get("/pairs")
    def pairs():
        """The watchlist, each pair with its parameters and live figures."""
        return jsonify([row for _, row in current_market().pair_rows(g.snap)])

    @api.post("/pairs")
    @changes
    def add_pair():
        """Watch another pair, JSON {"a": "SOLUSDT", "b": "BNBUSDT"}: 201 with its row, or 400
        with the reason (a symbol not trading, the same twice, already watched, 20 already)."""
        raw = request.get_json(silent=True)
        if not isinstance(raw, dict) or set(raw) - {"a", "b"}:
            raise BadRequest('send a JSON object {"a": "SYMBOL", "b": "SYMBOL"}')
        market = current_market()
        added = market.add_pair(raw.get("a"), raw.get("b"))
        return jsonify(market.pair_row(added, g.snap.now, market.newest_alert(g.snap))), 201

    @api.delete("/pairs/<name>")
    @changes
    def remove_pair(name):
        """Stop watching a pair (its history stays until it ages out): 204, 404 if it is not
        watched, 409 for the last one."""
        pair = parse_pair(name)  # a 400 when it is not a pair at all
        try:
            current_market().remove_pair(pair)
        except KeyError as exc:
            return jsonify(error=exc.args[0]), 404
        except (NotAnEditor, DatabaseDown):
            raise  # a 403, a 503
        except SettingsError as exc:
            return jsonify(error=str(exc)), 409
        return "", 204

    @api.get("/analytics.csv")
    @exports
    @exporting
    def analytics_csv():
        market, _settings, params = _analytics_params()
        end_s = g.snap.now_s
        df = market.frame(g.snap, end_s - _seconds(market) + 1, end_s, params)
        out = df[[*params.pair, "beta", "alpha", "spread", "mean", "std", "zscore"]]
        a, b = params.pair
        return _csv_response(_frame_chunks(out), f"analytics_{a}-{b}_{params.tf}.csv")

    @api.get("/backtest.csv")
    @exports
    @exporting
    def backtest_csv():
        market, settings, params = _analytics_params()
        args = request.args
        bt = parse_backtest(
            args.get("entry", settings.threshold),
            args.get("exit", 0.0),
            args.get("stop", 4.0),
            args.get("cost_bps", 5.0),
        )
        rows = trade_rows(market.backtest(g.snap, bt, params)["trades"])
        a, b = params.pair
        return _csv_rows(
            [c["field"] for c in TRADE_COLUMNS],
            ([r[c["field"]] for c in TRADE_COLUMNS] for r in rows),
            f"backtest_{a}-{b}_{params.tf}.csv",
        )

    @api.get("/alerts.csv")
    @exports
    @exporting
    def alerts_csv():
        """The alert log, oldest first (every process's alerts: it is the shared log)."""
        market = current_market()
        limit = _int_param("limit", MAX_ALERTS, 1, MAX_ALERTS)
        fields = ["id", "time_utc", "pair", "rule", "value", "zscore", "spread"]
        rows = (list(a.as_row().values()) for a in reversed(market.alerts.log(limit=limit)))
        return _csv_rows(fields, rows, "alerts.csv")

    @api.post("/alerts/test")
    @test_alerts
    def test_alert():
        """A test alert through every channel (log, toasts, webhook), like the Settings button.
        Never from a webhook delivery (a webhook pointed here would loop), at most one per
        TEST_ALERT_GAP_S."""
        if DELIVERY_HEADER in request.headers:
            return jsonify(error="a webhook delivery cannot send a test alert (the webhook points at this app)"), 409
        try:
            alert = current_market().send_test_alert()
        except TooSoonForTestAlert as exc:
            return jsonify(error=str(exc)), 429, {"Retry-After": str(exc.retry_after_s)}
        return jsonify(alert.as_row()), 201

    @api.get("/ticks.csv")
    @exports
    @exporting
    def ticks_csv():
        market = current_market()
        raw, pair = request.args.get("symbol"), request.args.get("pair")
        if raw is not None:
            symbols = (_symbol(market, raw, "symbol"),)
        else:
            symbols = g.snap.settings.pair if pair is None else _watched(market, parse_pair(pair)).pair
        limit = _int_param("limit", MAX_TICKS, 1, MAX_TICKS)
        rows = ([iso_utc(t.time), t.symbol, t.price] for t in reversed(market.recent_ticks(g.snap, limit, symbols)))
        return _csv_rows(["timestamp_utc", "symbol", "price"], rows, "ticks.csv")

    @api.get("/chart/<kind>.png")
    @exports
    @exporting
    def chart_png(kind):
        if kind not in figures.CHART_KINDS:
            raise BadRequest(f"unknown chart {shown(kind)}; use one of {', '.join(figures.CHART_KINDS)}")
        market, settings, params = _analytics_params()
        threshold = parse_threshold(request.args.get("threshold", settings.threshold))
        end_s = g.snap.now_s
        start_s = end_s - _seconds(market) + 1
        width, height = _int_param("width", 1200, 200, 4000), _int_param("height", 500, 150, 4000)

        def render() -> bytes:
            """Every point of the range (no downsampling in an export)."""
            df = market.frame(g.snap, start_s, end_s, params)
            saved = params == market.params(settings)  # the rules' alerts are for the saved parameters
            alerts = market.alerts.log(settings.pair_label, since_s=start_s) if saved else []
            ohlc = market.ohlc(g.snap, start_s, end_s, params) if kind == "price" else None
            fig = figures.chart_figure(kind, df, params, threshold, alerts, ohlc)
            return renderer.render(fig, width=width, height=height)

        try:  # the same chart asked for in the same second by several clients is rendered once
            png = market.shared(("png", kind, params, threshold, start_s, end_s, width, height, g.snap.seq), render)
        except RendererUnavailable as exc:
            return jsonify(error=str(exc)), 503
        return Response(png, mimetype="image/png")

    @api.get("/push")
    @pushing
    def push():
        """Server-sent events for an open page (?page=/live, ?pair=A-B as the page's URL): its
        pushed values (pages/_tick.py `register_push`) each time the store has a new tick, at
        most every PUSH_EVERY_S, for PUSH_MAX_S (the browser then connects again). 204 when the
        source does not stream (the page's tick is as fresh), 404 for a page with nothing pushed."""
        market, page = current_market(), request.args.get("page", "")
        pushed = PUSHES.get(page)
        if pushed is None:
            raise NotFound(f"nothing is pushed to {shown(page)}; pushed: {', '.join(sorted(PUSHES))}")
        pair = request.args.get("pair")
        settings = g.snap.settings if pair is None else _watched(market, parse_pair(pair))
        if market.relay is None:
            return "", 204

        def event() -> str:
            snap = market.snapshot(settings)
            values, stamps = pushed(market, snap)
            return f"data: {json.dumps({'values': values, 'stamps': stamps})}\n\n"

        def events() -> Iterator[str]:
            yield f"retry: {PUSH_RETRY_MS}\n\n"
            seq, until = None, time.monotonic() + PUSH_MAX_S
            quiet_until = time.monotonic() + PUSH_KEEPALIVE_S
            while time.monotonic() < until:
                # Every push wakes on the same boundaries, so one event serves every tab. It only
                # looks at the store then: a wait woken by each trade cost every open page a
                # thread switch per trade.
                time.sleep(PUSH_EVERY_S - time.monotonic() % PUSH_EVERY_S)
                if market.store.tick_seq != seq:
                    seq = market.store.tick_seq
                    yield push_events.get((page, settings.pair, seq, int(market.clock())), event)
                elif time.monotonic() >= quiet_until:
                    yield ": keep-alive\n\n"
                else:
                    continue
                quiet_until = time.monotonic() + PUSH_KEEPALIVE_S

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy may hold them back
        return Response(events(), mimetype="text/event-stream", headers=headers)

    @api.get("/scan")
    @scans
    def scan():
        """The scanner's ranked pairs (CSV, or JSON with format=json) for quote & top, or symbols,
        with tf and lookback. A cached result answers at once; else a scan starts in a process of
        its own (one at a time, however many ask) and this waits up to SCAN_WAIT_S for it, then
        answers 202 with its progress and a Retry-After."""
        market = current_market()
        req = market.scan_request(request.args)
        fmt = parse_choice(request.args.get("format", "csv"), ("csv", "json"), "format")
        scanner = market.scanner()
        key = scanner.key(req)
        deadline = time.monotonic() + SCAN_WAIT_S
        while (result := scanner.cached(req)) is None:
            failed = market.scans.error(key) or busy_with_another(scanner, req)
            if failed:
                raise failed
            market.scans.start(req, key)
            if time.monotonic() >= deadline:
                progress = market.scans.progress(key) or {}
                return jsonify(status="running", **progress), 202, {"Retry-After": "2"}
            time.sleep(SCAN_POLL_S)
        headers = {"Last-Modified": http_date(result.computed_at)}
        if fmt == "json":
            return jsonify(result.as_json()), 200, headers
        universe = f"{len(req.symbols)}-symbols" if req.symbols else f"{req.quote}-top{req.top}"
        name = f"scan_{universe}_{req.tf}_{req.lookback}.csv"
        resp = _csv_rows(list(COLUMNS), ([r[c] for c in COLUMNS] for r in result.rows), name)
        resp.headers.update(headers)
        return resp

    @api.route("/<path:rest>")
    def not_found(rest):
        return jsonify(error=f"no API route {shown('/api/' + rest)}; see the README for the routes"), 404

    return api


def metrics_response() -> Response:
    """`GET /metrics`: Prometheus text format (summed across gunicorn workers in multiprocess mode)."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _symbol(market, value, name):
    return parse_symbol(value, set(market.symbols()) | {sym for s in market.watchlist() for sym in s.pair}, name)


def _watched(market, pair):
    """The settings of `pair` (in that order of its legs), which must be watched; else a 400."""
    watched = market.settings_store.for_pair(pair)
    if watched is None:
        names = ", ".join(pair_name(s.pair) for s in market.watchlist())
        raise BadRequest(
            f"{pair[0]}/{pair[1]} is not a watched pair (watched: {names}); add it on /settings or with POST /api/pairs"
        )
    return watched if watched.pair == pair else replace(watched, symbol_a=pair[0], symbol_b=pair[1])


def _analytics_params():
    """The analysis parameters of a request: a watched pair's saved ones (pair=A-B, or a= and b=;
    the first pair of the watchlist by default), overridden by window, hedge, tf and log."""
    market = current_market()
    first = g.snap.settings
    args = request.args
    if "pair" in args:
        pair = parse_pair(args["pair"])
    else:
        pair = (
            parse_symbol(args.get("a", first.symbol_a), None, "a"),
            parse_symbol(args.get("b", first.symbol_b), None, "b"),
        )
    settings = _watched(market, pair)
    params = market.params(
        settings,
        window=parse_window(args.get("window", settings.window)),
        hedge=parse_choice(args.get("hedge", settings.hedge), METHODS, "hedge"),
        tf=parse_choice(args.get("tf", settings.timeframe), tuple(TIMEFRAMES), "tf"),
        log=parse_bool(args.get("log", settings.log_prices), "log"),
    )
    return market, settings, params


def _int_param(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {shown(raw)}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be from {lo} to {hi}, got {shown(raw)}")
    return value


def _seconds(market) -> int:
    return _int_param("seconds", DEFAULT_SECONDS, 1, market.config.history_s)


def _frame_chunks(df) -> Iterator[str]:
    """A frame indexed by `timestamp_utc` as CSV text, CHUNK_ROWS rows at a time."""
    yield ",".join(["timestamp_utc", *df.columns]) + "\n"
    for start in range(0, len(df), CHUNK_ROWS):
        part = df.iloc[start : start + CHUNK_ROWS]
        part = part.set_axis(part.index.strftime("%Y-%m-%dT%H:%M:%SZ"))
        yield part.to_csv(header=False, float_format="%.15g")


def _csv_rows(header: list[str], rows, filename: str) -> Response:
    def chunks() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        rows_left = iter(rows)
        while batch := list(itertools.islice(rows_left, CHUNK_ROWS)):
            writer.writerows([csv_text(v) for v in row] for row in batch)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        yield buf.getvalue()

    return _csv_response(chunks(), filename)


def _csv_response(chunks: Iterator[str], filename: str) -> Response:
    """A CSV download, streamed: a big answer is never one string in memory."""
    return Response(chunks, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
