"""Live crypto pair dashboard: Binance prices in 1-second UTC buckets, spread, rolling z, alerts.

Run `python app.py --help` for the options. For gunicorn: `gunicorn app:server`; for the scans'
workers when CACHE_URL is set: `celery -A app:celery_app worker` (both configured from the
environment variables; nothing is fetched and no thread starts at import).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import dash
import dash_bootstrap_components as dbc
import diskcache
from dash import ALL, MATCH, ClientsideFunction, Input, Output, State, ctx, dcc, html
from flask import Flask, jsonify, request
from flask_caching import Cache
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler

from api import create_api, metrics_response
from components import ids
from components.layout import alert_text, alert_toast, leg_badges, navbar, status_banner
from pages._tick import VIEWS
from services import auth, jobs, limits, memory, metrics, webguard
from services.auth import AuthConfig
from services.cache import open_shared_cache
from services.db import FAILURES, Database, DatabaseProblem, copy_database
from services.export import PngRenderer
from services.market import MarketService
from services.replay import ReplayError
from services.settings import (
    MAX_PAIRS,
    AppConfig,
    SettingsError,
    pair_name,
    parse_cache_url,
    parse_database_url,
    parse_pair,
    parse_pairs,
    parse_url,
    query_pair,
)
from services.status import MarketStatus
from services.webguard import host_name, is_loopback, parse_proxies

HERE = Path(__file__).resolve().parent
log = logging.getLogger("dashboard")

ENV = {
    "source": "SOURCE",
    "binance_url": "BINANCE_BASE_URL",
    "stream_url": "BINANCE_STREAM_URL",
    "fallback_urls": "BINANCE_FALLBACK_URLS",
    "host": "HOST",
    "port": "PORT",
    "data_dir": "DATA_DIR",
    "debug": "DEBUG",
    "history_s": "HISTORY_S",
    "sim_seed": "SIM_SEED",
    "replay": "REPLAY",
    "replay_speed": "REPLAY_SPEED",
    "allow_private_webhooks": "ALLOW_PRIVATE_WEBHOOKS",
    "allowed_hosts": "ALLOWED_HOSTS",
    "pairs": "PAIRS",
    "cache_url": "CACHE_URL",
    "database_url": "DATABASE_URL",
    "users_file": "USERS_FILE",
    "trust_proxy_auth": "TRUST_PROXY_AUTH",
    "trusted_proxies": "TRUSTED_PROXIES",
    "insecure_no_auth": "INSECURE_NO_AUTH",
}
PARSED = {
    "pairs": parse_pairs,
    "cache_url": parse_cache_url,
    "database_url": parse_database_url,
    "trusted_proxies": lambda raw: parse_proxies(raw.replace(",", " ").split()),
}
MAX_BODY_BYTES = 1 << 20  # no page sends more in one request; a bigger body gets a 413


def config_from_env(environ=os.environ) -> AppConfig:
    """AppConfig from the environment variables (the CLI flags' twins)."""
    types = {f.name: f.type for f in fields(AppConfig)}
    values = {}
    for name, var in ENV.items():
        raw = environ.get(var)
        if raw is None:
            continue
        kind = types[name]
        try:
            if kind == "bool":
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            elif kind == "int":
                values[name] = int(raw)
            elif name in PARSED:
                values[name] = PARSED[name](raw)
            else:
                values[name] = (
                    tuple(raw.split())
                    if name == "replay"
                    else tuple(raw.replace(",", " ").split())
                    if name in ("fallback_urls", "allowed_hosts")
                    else raw
                )
        except SettingsError as exc:
            raise SystemExit(f"{var}: {exc}") from None
        except ValueError:
            raise SystemExit(f"{var} must be a whole number, got {raw!r}") from None
    return AppConfig(**values)


@dataclass(frozen=True)
class Run:
    """What `python app.py` does besides serving: run the headless collector instead, or do one
    thing and exit (copy the SQLite database into PostgreSQL, add a user or a token)."""

    collector: bool = False
    migrate_to: str = ""  # a PostgreSQL URL (parse_database_url)
    add_user: str = ""  # NAME:ROLE, into --users-file
    add_token: str = ""  # NAME, into --users-file


def parse_args(argv=None, environ=os.environ) -> tuple[AppConfig, Run]:
    """The configuration, and what to run."""
    env = config_from_env(environ)
    p = argparse.ArgumentParser(description="Live crypto pair dashboard (spread, rolling z-score, alerts).")
    p.add_argument(
        "--source",
        choices=("auto", "binance", "stream", "sim", "replay"),
        default=env.source,
        help="where prices come from; auto probes Binance for 3 s and reads its stream (REST while "
        "it is down), or falls back to the labelled simulation; binance polls REST only; stream reads "
        "trades from Binance's WebSocket stream (REST polls while it is down); replay plays --replay "
        "files (env SOURCE, default %(default)s)",
    )
    p.add_argument(
        "--replay",
        nargs="+",
        default=list(env.replay),
        metavar="PATH",
        help="kline recordings to replay: Binance bulk CSV (header or not, ms or µs times) or "
        "klines JSON, one per symbol, named like BTCUSDT-1m-2025-10-22.csv or given as "
        "SYMBOL=PATH (env REPLAY, space-separated)",
    )
    p.add_argument(
        "--replay-speed",
        default=env.replay_speed,
        help="recorded seconds per second: 1 (real time), 10, ... or max (env REPLAY_SPEED, default %(default)s)",
    )
    p.add_argument(
        "--binance-url",
        default=env.binance_url,
        help="Binance REST base URL (env BINANCE_BASE_URL, default %(default)s)",
    )
    p.add_argument(
        "--stream-url",
        default=env.stream_url,
        help="Binance's market-stream host for --source stream, e.g. wss://data-stream.binance.vision "
        "(env BINANCE_STREAM_URL, default %(default)s)",
    )
    p.add_argument(
        "--fallback-urls",
        nargs="*",
        default=list(env.fallback_urls),
        metavar="URL",
        help="REST hosts to move to, in order, when one answers HTTP 451 (restricted location) "
        "(env BINANCE_FALLBACK_URLS, comma- or space-separated; default %(default)s)",
    )
    p.add_argument("--host", default=env.host, help="address to listen on (env HOST, default %(default)s)")
    p.add_argument("--port", type=int, default=env.port, help="port (env PORT, default %(default)s)")
    p.add_argument(
        "--data-dir",
        default=env.data_dir,
        help="where the database (history, settings, alert log) and the shared cache live "
        "(env DATA_DIR, default %(default)s)",
    )
    p.add_argument(
        "--cache-url",
        default=env.cache_url,
        metavar="URL",
        help="redis://[:password@]host[:port][/db]: the cache every host shares (the poll slot, the "
        "Retry-After window, the stream lease), so that several hosts ask Binance once per interval "
        "and hold one stream connection; while Redis does not answer, each host goes on with its own. "
        "Default: a file cache under --data-dir, shared by this machine's processes (env CACHE_URL)",
    )
    p.add_argument(
        "--database-url",
        default=env.database_url,
        metavar="URL",
        help="postgresql://user:password@host[:port]/database: the database every host shares (history, "
        "settings, the watchlist, the alert log); while it does not answer, ticks and alerts wait in "
        "memory and are written when it does. Default: an SQLite file under --data-dir (env DATABASE_URL)",
    )
    p.add_argument(
        "--migrate-sqlite-to",
        metavar="URL",
        help="copy the SQLite database under --data-dir into the PostgreSQL database at URL (made or "
        "upgraded to this version's schema; it must hold no data of this app yet), then exit",
    )
    p.add_argument(
        "--history",
        dest="history_s",
        type=int,
        default=env.history_s,
        help="seconds of 1 s history kept, in memory and in the database (env HISTORY_S, default %(default)s)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=env.debug,
        help="Dash debug mode: reloader, dev tools and Werkzeug's interactive debugger, which is a "
        "Python console for whoever can reach the port, so loopback hosts only (env DEBUG; off by default)",
    )
    p.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        default=env.allow_private_webhooks,
        help="let the webhook point at private and loopback addresses, for a receiver on a trusted "
        "network or this machine (never the app itself); off by default (env ALLOW_PRIVATE_WEBHOOKS)",
    )
    p.add_argument(
        "--allowed-hosts",
        nargs="*",
        default=list(env.allowed_hosts),
        metavar="NAME",
        help="host names the app answers to besides loopback and --host, e.g. the name a reverse proxy "
        "forwards (env ALLOWED_HOSTS, comma- or space-separated); other Host headers get a 400",
    )
    p.add_argument(
        "--users-file",
        default=env.users_file,
        metavar="PATH",
        help="who may sign in: lines 'user NAME viewer|editor HASH' and 'token NAME SHA256' (write them with "
        "--add-user and --add-token). Viewers see everything; editors also change settings, the watchlist, "
        "rules and the webhook (env USERS_FILE)",
    )
    p.add_argument(
        "--trust-proxy-auth",
        action="store_true",
        default=env.trust_proxy_auth,
        help="a reverse proxy authenticates and names the user in X-Forwarded-User (read from "
        "--trusted-proxies only; the role is the users file's, viewer for anyone not in it) (env TRUST_PROXY_AUTH)",
    )
    p.add_argument(
        "--trusted-proxies",
        nargs="*",
        default=list(env.trusted_proxies),
        metavar="ADDR",
        help="addresses or networks of the reverse proxies whose X-Forwarded-For/-Proto/-Host (and "
        "X-Forwarded-User) are believed; no one's by default (env TRUSTED_PROXIES)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=env.insecure_no_auth,
        help="serve a non-loopback --host with no login: anyone who reaches it can change everything "
        "(said on every page). Refused without it (env INSECURE_NO_AUTH)",
    )
    p.add_argument(
        "--add-user", metavar="NAME:ROLE", help="set a user's password (asked) and role in --users-file, then exit"
    )
    p.add_argument("--add-token", metavar="NAME", help="print a new API token for a user of --users-file, then exit")
    p.add_argument(
        "--pairs",
        default=None,
        metavar="A-B,C-D",
        help="the pairs to watch on the first start, e.g. BTCUSDT-ETHUSDT,SOLUSDT-BNBUSDT (at most "
        f"{MAX_PAIRS}); after that Settings and /api/pairs own the watchlist (env PAIRS; default the "
        "saved pair, BTCUSDT-ETHUSDT)",
    )
    p.add_argument(
        "--collector",
        action="store_true",
        help="run only ingestion and alerting (no web server, no browser needed), writing to the "
        "same --data-dir as the web app, so alerts fire while nobody watches",
    )
    a = p.parse_args(argv)
    if a.source == "replay" and len(a.replay) < 2:
        p.error("--source replay needs --replay with a recording of each symbol of the pair")
    if a.debug and not is_loopback(host_name(a.host)):
        p.error(f"--debug serves a Python console; it is refused on the non-loopback host {a.host}")
    for url in [a.binance_url, *a.fallback_urls]:
        try:
            parse_url(url, "--binance-url / --fallback-urls", required=True)
        except SettingsError as exc:
            p.error(str(exc))
    try:
        pairs = env.pairs if a.pairs is None else parse_pairs(a.pairs)
    except SettingsError as exc:
        p.error(f"--pairs: {exc}")
    urls = {}
    for flag in ("cache_url", "database_url", "migrate_sqlite_to"):
        try:
            urls[flag] = PARSED.get(flag, parse_database_url)(getattr(a, flag))
        except SettingsError as exc:
            p.error(f"--{flag.replace('_', '-')}: {exc}")
    try:
        proxies = parse_proxies(a.trusted_proxies)
    except ValueError as exc:
        p.error(f"--trusted-proxies: {exc}")
    if (a.add_user or a.add_token) and not a.users_file:
        p.error("--add-user and --add-token write to --users-file: name it")
    if a.migrate_sqlite_to is not None and not urls["migrate_sqlite_to"]:
        p.error("--migrate-sqlite-to: give the PostgreSQL URL to copy into")
    return AppConfig(
        source=a.source,
        binance_url=a.binance_url,
        stream_url=a.stream_url,
        fallback_urls=tuple(a.fallback_urls),
        host=a.host,
        port=a.port,
        data_dir=a.data_dir,
        debug=a.debug,
        history_s=a.history_s,
        sim_seed=env.sim_seed,
        replay=tuple(a.replay),
        replay_speed=a.replay_speed,
        allow_private_webhooks=a.allow_private_webhooks,
        allowed_hosts=tuple(a.allowed_hosts),
        pairs=pairs,
        cache_url=urls["cache_url"],
        database_url=urls["database_url"],
        users_file=a.users_file,
        trust_proxy_auth=a.trust_proxy_auth,
        trusted_proxies=proxies,
        insecure_no_auth=a.insecure_no_auth,
    ), Run(a.collector, urls["migrate_sqlite_to"], a.add_user or "", a.add_token or "")


def cache_dir(config: AppConfig) -> str:
    """The cache every process on this data dir shares (web workers and the collector)."""
    return str(Path(config.data_dir) / "cache")


def create_app(config: AppConfig | None = None, market: MarketService | None = None) -> dash.Dash:
    """Build the Dash app and its service layer. Cheap: no network, no threads."""
    config = config or config_from_env()
    memory.limit_arenas()  # before the server's threads allocate
    server = Flask(__name__)
    if config.cache_url:  # the scans on Celery workers: one started through a host is followed through another
        server.extensions["celery"] = jobs.celery_app(config.cache_url, server)
        server.secret_key = auth.secret_key(config.data_dir)  # signs their handles; SECRET_KEY on every host
        background = dash.CeleryManager(server.extensions["celery"])
    else:  # each in a process of its own, forked by the web worker, its progress and result on disk
        background = dash.DiskcacheManager(diskcache.Cache(str(Path(config.data_dir) / "jobs")))
    app = dash.Dash(
        __name__,
        server=server,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="Pair Monitor",
        update_title=None,  # Bootswatch Darkly is served from assets/ (offline)
        suppress_callback_exceptions=True,
        on_error=_callback_failed,
        background_callback_manager=background,  # the scanner's scans: services/jobs.py
    )
    server.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    server.register_error_handler(Exception, _request_failed)
    webguard.install(server, config.host, config.allowed_hosts, config.trusted_proxies)
    if auth_required(config):
        auth.install(
            server, AuthConfig(config.users_file, config.trust_proxy_auth, config.trusted_proxies), config.data_dir
        )
    cache = Cache(
        server,
        config={
            "CACHE_TYPE": "services.cache.shared_cache",
            "CACHE_URL": config.cache_url,
            "CACHE_DIR": cache_dir(config),
        },
    )
    server.extensions["market"] = market or MarketService(config, cache)
    server.register_blueprint(create_api(PngRenderer(), limits.make(server, config.cache_url)))
    server.add_url_rule("/metrics", "metrics", metrics_response)

    app.layout = html.Div(
        [
            dcc.Interval(id=ids.INTERVAL, interval=1_000),
            dcc.Store(id=ids.ALERT_SEEN),
            dcc.Store(id=ids.NEW_ALERTS),
            dcc.Store(id=ids.NOTIFY_DONE),
            dcc.Store(id=ids.TICK),
            navbar(dash.page_registry.values(), sign_out=auth_required(config)),
            dbc.Container(status_banner(open_to=config.host if insecure(config) else ""), fluid=True),
            html.Div(id=ids.TOASTS, className="toast-area"),
            dash.page_container,
        ]
    )
    _register_shell_callbacks(app)
    return app


def _callback_failed(exc: Exception) -> None:
    """A callback that raised: logged, and the page left as it is (no output changes). Pages
    validate what they are sent; this is the net under a request crafted by hand."""
    log.warning("callback %s failed: %s", ctx.triggered_id, exc, exc_info=exc)


def _request_failed(exc: Exception):
    """Anything outside the API blueprint that raised (a callback request whose body is not the
    shape Dash sends): one line of JSON, never an HTML page or a traceback."""
    if isinstance(exc, HTTPException):
        return jsonify(error=exc.description), exc.code
    if request.path.endswith("_dash-update-component"):
        log.warning("malformed callback request: %r", exc)
        return jsonify(error="malformed callback request"), 400
    log.error("%s %s failed", request.method, request.path, exc_info=exc)  # a bug: with its traceback
    return jsonify(error="internal error; see the server log"), 500


def _age_badge(status: MarketStatus) -> tuple[str, str]:
    age = status.age_s
    if age is None:
        return ("no data: upstream error" if status.state == "error" else "waiting for data"), "secondary"
    when = status.last_tick_utc[11:19] + "Z"
    if status.state == "stale":
        return f"STALE · {age:,.0f} s ({when})", "danger"
    return f"live · {age:.1f} s ({when})", "success"


def _banner(status: MarketStatus, auto: bool) -> list:
    banner = []
    err = status.last_error
    if status.rate_limit_resumes_in_s is not None:
        banner.append(
            dbc.Alert(
                f"Rate-limited by the exchange (HTTP {err.status if err else 429}): "
                f"no requests until {status.rate_limited_until_utc}, resuming in "
                f"{status.rate_limit_resumes_in_s:.0f} s.",
                color="warning",
                className="py-2 small",
            )
        )
    elif err:
        banner.append(
            dbc.Alert(f"Upstream error at {err.time_utc}: {err.message}", color="danger", className="py-2 small")
        )
    if status.simulated and auto:
        banner.append(
            dbc.Alert(f"Showing simulated data: {status.source_note}.", color="warning", className="py-2 small")
        )
    if status.rest_host_note:
        banner.append(
            dbc.Alert(status.rest_host_note + " (change it on Settings).", color="info", className="py-2 small")
        )
    if status.settings_error:
        banner.append(dbc.Alert(status.settings_error, color="warning", className="py-2 small"))
    shared = status.shared_cache or {}
    if not shared.get("up", True):
        banner.append(
            dbc.Alert(
                f"The shared cache (Redis at {shared['url']}) has not answered since {shared['down_since_utc']}: "
                "this host goes on with its own cache (its own polls and stream connection) until Redis answers "
                "again.",
                color="warning",
                className="py-2 small",
            )
        )
    database = status.database or {}
    if not database.get("up", True):
        waiting = database.get("unwritten", {})
        banner.append(
            dbc.Alert(
                f"The database ({database['where']}) has not answered since {database['down_since_utc']} "
                f"({database['reason']}). Live prices go "
                f"on from memory; {waiting.get('buckets', 0):,} seconds, {waiting.get('ticks', 0):,} ticks and "
                f"{waiting.get('alerts', 0):,} alerts wait to be written when it answers (settings changes can't be "
                "saved until then).",
                color="warning",
                className="py-2 small",
            )
        )
    if status.database_error:
        banner.append(
            dbc.Alert(
                f"The database is damaged ({status.database_error}): live prices are shown from memory, but "
                "history, settings and alerts may not be saved or shown. Stop the app, move the database file "
                "aside and start again (the history is backfilled from the exchange), or restore a backup.",
                color="danger",
                className="py-2 small",
            )
        )
    return banner


def _pair_asked(market, search) -> tuple[tuple[str, str] | None, str | None]:
    """The pair a page's URL names (?pair=A-B), and what to say when it is not one watched."""
    raw = query_pair(search)
    if raw is None:
        return None, None
    try:
        pair = parse_pair(raw)
    except SettingsError as exc:
        return None, f"{exc}. Showing {pair_name(market.current_settings().pair)}."
    if market.settings_store.for_pair(pair) is None:
        first = pair_name(market.current_settings().pair)
        return None, f"{pair_name(pair)} is not in the watchlist (add it on Settings). Showing {first}."
    return pair, None


def _shell(snap, auto: bool, note: str | None = None) -> tuple:
    """Navbar badges, the status banner (with `note`, about the URL's pair) and the interval,
    from the tick's snapshot."""
    status = snap.status
    age_text, age_color = _age_badge(status)
    source_text, source_color = (
        ("Simulated data", "warning")
        if status.simulated
        else (status.source_label, "primary" if status.source == "replay" else "info")
    )
    return (
        snap.settings.pair_label,
        source_text,
        source_color,
        age_text,
        age_color,
        leg_badges(status.legs),
        _banner(status, auto) + ([dbc.Alert(note, color="warning", className="py-2 small")] if note else []),
        int(snap.settings.poll_interval_s * 1000),
    )


def _toasts(market, snap, seen) -> tuple:
    """Alerts logged since this tab last looked (by any worker or the collector) as toasts.
    A tab that just opened starts from the newest alert: it does not replay the log."""
    newest = market.newest_alert(snap)
    if not isinstance(seen, int) or seen < 0:  # None: a tab that just opened (else: not what a page sends)
        return dash.no_update, newest, dash.no_update
    new = market.alerts_since(snap, seen) if newest > seen else []
    if not new:
        return dash.no_update, dash.no_update, dash.no_update
    notes = [{"title": f"{a.pair}: {a.rule}", "body": alert_text(a), "tag": str(a.id)} for a in new]
    return [alert_toast(a) for a in new[:5]], new[0].id, notes


def _register_shell_callbacks(app: dash.Dash) -> None:
    @app.callback(
        Output(ids.NAV_PAIR, "children"),
        Output(ids.SOURCE_BADGE, "children"),
        Output(ids.SOURCE_BADGE, "color"),
        Output(ids.AGE_BADGE, "children"),
        Output(ids.AGE_BADGE, "color"),
        Output(ids.LEG_BADGES, "children"),
        Output(ids.STATUS_BANNER, "children"),
        Output(ids.INTERVAL, "interval"),
        Output(ids.TOASTS, "children"),
        Output(ids.ALERT_SEEN, "data"),
        Output(ids.NEW_ALERTS, "data"),
        Output(ids.TICK, "data"),
        Input(ids.INTERVAL, "n_intervals"),
        Input(ids.PAGE_LOCATION, "pathname"),
        Input(ids.PAGE_LOCATION, "search"),
        Input(ids.view(ALL), "value"),
        Input(ids.zoom(ALL), "data"),
        State(ids.ALERT_SEEN, "data"),
        State(ids.cursor(ALL), "data"),
    )
    def tick(_n, pathname, search, _view_values, _zooms, seen, _cursors):
        """The tab's one request per tick: one refresh, then everything the tick changed (shell,
        toasts, and the open page's cards, tables and chart updates) from one snapshot, of the
        pair the URL names (?pair=A-B) or the watchlist's first."""
        started = time.perf_counter()
        market = app.server.extensions["market"]
        pair, note = _pair_asked(market, search)
        snap = market.tick(pair)
        path = "/" + app.strip_relative_path(pathname if isinstance(pathname, str) else "/")
        page = VIEWS.get(path)
        view = {item["id"]["name"]: item.get("value") for item in ctx.inputs_list[3]}
        view["zoom"] = {item["id"]["graph"]: item.get("value") for item in ctx.inputs_list[4]}
        held = next((c.get("value") for c in ctx.states_list[1] if c["id"]["page"] == path), None)
        held = held if isinstance(held, dict) else {}  # what the page has applied (a store anyone can set)
        values, page_cursor = page.build(market, snap, view, held) if page else ({}, {})
        out = (
            *_shell(snap, market.config.source == "auto", note),
            *_toasts(market, snap, seen),
            {"path": path, "values": values, "cursor": page_cursor},
        )
        metrics.CALLBACK_SECONDS.labels(page=path if page else "other").observe(time.perf_counter() - started)
        return out

    app.clientside_callback(
        ClientsideFunction(namespace="notifier", function_name="ask"),
        Output(ids.NOTIFY_DONE, "data"),
        Input(ids.NOTIFY, "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction(namespace="notifier", function_name="show"),
        Output(ids.NOTIFY_DONE, "data", allow_duplicate=True),
        Input(ids.NEW_ALERTS, "data"),
        State(ids.NOTIFY, "value"),
        prevent_initial_call=True,
    )

    app.clientside_callback(  # the page links keep the URL's pair
        ClientsideFunction(namespace="navbar", function_name="links"),
        Output(ids.nav_link(ALL), "href"),
        Output(ids.nav_link(ALL), "active"),
        Input(ids.PAGE_LOCATION, "pathname"),
        Input(ids.PAGE_LOCATION, "search"),
    )
    app.clientside_callback(  # the menu opens and closes on the toggler, and closes on navigating
        ClientsideFunction(namespace="navbar", function_name="toggle"),
        Output(ids.NAV_COLLAPSE, "is_open"),
        Input(ids.NAV_TOGGLER, "n_clicks"),
        Input(ids.PAGE_LOCATION, "pathname"),
        State(ids.NAV_COLLAPSE, "is_open"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction(namespace="exporter", function_name="png"),
        Output(ids.export_done(MATCH), "data"),
        Input(ids.export_button(MATCH), "n_clicks"),
        prevent_initial_call=True,
    )


def check_database(config: AppConfig) -> None:
    """Before anything is made under the data dir: stop the start with one line when the database
    file can't be used (never modifying it)."""
    try:
        log.info("database: %s", Database(config.data_dir, config.database_url).check())
    except DatabaseProblem as exc:
        raise SystemExit(f"error: {exc}") from None


def migrate(config: AppConfig, url: str) -> None:
    """--migrate-sqlite-to: copy the data dir's SQLite database into PostgreSQL, all or nothing."""
    source, target = Database(config.data_dir), Database(config.data_dir, url)
    try:
        if not source.path.exists():
            raise DatabaseProblem(f"{source.path}: no SQLite database to copy (is --data-dir right?)")
        log.info("from: %s", source.check())
        log.info("to: %s", target.check())
        counts = copy_database(source, target)
    except DatabaseProblem as exc:
        raise SystemExit(f"error: {exc}") from None
    except FAILURES as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:300]
        raise SystemExit(f"error: copying into {target.shown_url} failed, nothing was written: {reason}") from None
    copied = ", ".join(f"{n:,} {table}" for table, n in counts.items())
    log.info("copied %s from %s to %s; start the app with --database-url", copied, source.path, target.shown_url)


def open_market(market: MarketService) -> None:
    """Open the source now (probe Binance, or read the recordings); one-line exit on bad files."""
    try:
        source = market.source()
    except ReplayError as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("source: %s (%s)", source.label, market.link.source_note)


def set_up_dash(server: Flask) -> None:
    """Before serving: Dash sets itself up on a server's first request (a before-request hook), and
    two first requests on two threads can race there (plotly/dash#2925: "dictionary changed size
    during iteration", a 500; seen once on a gunicorn host of the desk test). A request of our own,
    on this thread, does it first; its answer (a 404) does not matter."""
    server.test_client().get("/_dash-set-up")


def run_collector(config: AppConfig, stop: threading.Event | None = None) -> None:
    """Ingestion and alerting with no web server: refresh once per poll interval until `stop`
    (SIGTERM or Ctrl-C). It shares the data dir's cache and database with any web app, so the
    two never poll the same interval twice and show one history and one alert log."""
    stop = stop or threading.Event()
    market = MarketService(config, open_shared_cache(config.cache_url, cache_dir(config)))
    open_market(market)
    log.info("collector running on %s; stop with Ctrl-C or SIGTERM", config.data_dir)
    next_report = 0.0
    while not stop.is_set():
        snap = market.tick()
        if time.monotonic() >= next_report:  # a status line a minute, for whoever reads the log
            next_report = time.monotonic() + 60
            status = snap.status
            log.info(
                "collector: %s, legs %s, %d upstream polls, last error: %s",
                status.state,
                {leg.symbol: leg.state for leg in status.legs},
                status.upstream_polls,
                status.last_error.message if status.last_error else None,
            )
        interval = snap.settings.poll_interval_s
        stop.wait(interval - market.clock() % interval + 0.005)  # just after the next poll slot opens
    market.close()
    market.notifier.wait_idle(timeout=5)
    log.info("collector stopped")


def auth_required(config: AppConfig) -> bool:
    return bool(config.users_file or config.trust_proxy_auth)


def insecure(config: AppConfig) -> bool:
    """Served beyond loopback with no login (--insecure-no-auth)."""
    return not is_loopback(host_name(config.host)) and not auth_required(config)


def check_exposure(config: AppConfig) -> None:
    """Stop the start of a web server reachable beyond this machine with no way to know its users,
    unless --insecure-no-auth says it is meant to be open; and one whose users file is unusable."""
    if insecure(config) and not config.insecure_no_auth:
        raise SystemExit(
            f"error: --host {config.host} is reachable beyond this machine and nobody would need to sign in: "
            "give --users-file (or --trust-proxy-auth behind a proxy that authenticates), or --insecure-no-auth "
            "to serve it open on purpose"
        )
    try:
        auth.Directory.load(config.users_file)
    except auth.AuthConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def startup_warnings(config: AppConfig, environ=os.environ) -> list[str]:
    """What a person starting the web server must know about how exposed it is, or how alone."""
    warnings = []
    if config.cache_url and not environ.get("SECRET_KEY") and not is_loopback(host_name(config.host)):
        warnings.append(
            "CACHE_URL is set but SECRET_KEY is not: this host signs sign-ins and scans with a key of its own "
            "(in its data dir), so a user's next request that reaches another host is not recognised there. "
            "Give every host behind one address the same SECRET_KEY"
        )
    if config.debug:
        warnings.append("--debug: Werkzeug's interactive debugger is on, a Python console for whoever reaches the port")
    if insecure(config):
        warnings.append(
            f"--insecure-no-auth on {config.host}: anyone who can reach it can see the data and change the "
            "settings (no login). Give --users-file, or serve it behind a reverse proxy that authenticates, and "
            "name the host people use with --allowed-hosts"
        )
    return warnings


class OneSendHandler(WSGIRequestHandler):
    """The dev server's request handler with a buffered socket writer. Werkzeug writes a
    response's head, and each chunk's size, data and end, separately, and flushes after each
    chunk: unbuffered, that was three or four sends (and thread switches) per pushed event.
    It logs only the requests that went wrong (status 400 and up): every open tab asks once a
    second, and a line for each buried what matters (and cost a twentieth of a tab's serving)."""

    wbufsize = -1

    def log_request(self, code="-", size="-") -> None:
        if not str(code).isdigit() or int(code) >= 400:
            super().log_request(code, size)


def main(argv=None) -> None:
    config, run = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if run.add_user or run.add_token:
        try:
            print(
                auth.add_user(config.users_file, run.add_user)
                if run.add_user
                else auth.add_token(config.users_file, run.add_token)
            )
        except auth.AuthConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    if run.migrate_to:
        migrate(config, run.migrate_to)
        return
    check_database(config)
    if run.collector:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        run_collector(config, stop)
        return
    check_exposure(config)
    app = create_app(config)
    open_market(app.server.extensions["market"])
    set_up_dash(app.server)
    for warning in startup_warnings(config):
        log.warning(warning)
    log.info("serving on http://%s:%d", config.host, config.port)
    app.run(host=config.host, port=config.port, debug=config.debug, request_handler=OneSendHandler)


def __getattr__(name: str):
    """`app.server` for gunicorn, built on first access (PEP 562) so that importing this module
    for `create_app` or `main` does not build a second app."""
    if name == "server":
        config = config_from_env()
        check_exposure(config)
        check_database(config)
        globals()["server"] = create_app(config).server
        return globals()["server"]
    if name == "celery_app":  # `celery -A app:celery_app worker`: the scans' workers
        if not config_from_env().cache_url:
            raise SystemExit("error: CACHE_URL is not set: scans run in the web app's own processes, not on workers")
        return (globals().get("server") or __getattr__("server")).extensions["celery"]
    raise AttributeError(name)


if __name__ == "__main__":
    main()
