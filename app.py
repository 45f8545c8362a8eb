"""Live crypto pair dashboard: Binance prices in 1-second UTC buckets, spread, rolling z, alerts.

Run `python app.py --help` for the options. For gunicorn: `gunicorn app:server` (configured from
the environment variables; nothing is fetched and no thread starts at import).
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import fields
from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import MATCH, ClientsideFunction, Input, Output, dcc, html
from flask_caching import Cache

from api import create_api
from components import ids
from components.layout import navbar, status_banner
from services.export import PngRenderer
from services.market import MarketService
from services.replay import ReplayError
from services.settings import AppConfig

HERE = Path(__file__).resolve().parent
log = logging.getLogger("dashboard")

ENV = {"source": "SOURCE", "binance_url": "BINANCE_BASE_URL", "host": "HOST", "port": "PORT",
       "data_dir": "DATA_DIR", "debug": "DEBUG", "history_s": "HISTORY_S", "sim_seed": "SIM_SEED",
       "replay": "REPLAY", "replay_speed": "REPLAY_SPEED"}


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
            else:
                values[name] = tuple(raw.split()) if name == "replay" else raw
        except ValueError:
            raise SystemExit(f"{var} must be a whole number, got {raw!r}") from None
    return AppConfig(**values)


def parse_args(argv=None, environ=os.environ) -> AppConfig:
    env = config_from_env(environ)
    p = argparse.ArgumentParser(description="Live crypto pair dashboard (spread, rolling z-score, alerts).")
    p.add_argument("--source", choices=("auto", "binance", "sim", "replay"), default=env.source,
                   help="where prices come from; auto probes Binance for 3 s and falls back to the "
                        "labelled simulation; replay plays --replay files (env SOURCE, default %(default)s)")
    p.add_argument("--replay", nargs="+", default=list(env.replay), metavar="PATH",
                   help="kline recordings to replay: Binance bulk CSV (header or not, ms or µs times) or "
                        "klines JSON, one per symbol, named like BTCUSDT-1m-2025-10-22.csv or given as "
                        "SYMBOL=PATH (env REPLAY, space-separated)")
    p.add_argument("--replay-speed", default=env.replay_speed,
                   help="recorded seconds per second: 1 (real time), 10, ... or max (env REPLAY_SPEED, "
                        "default %(default)s)")
    p.add_argument("--binance-url", default=env.binance_url,
                   help="Binance REST base URL (env BINANCE_BASE_URL, default %(default)s)")
    p.add_argument("--host", default=env.host, help="address to listen on (env HOST, default %(default)s)")
    p.add_argument("--port", type=int, default=env.port, help="port (env PORT, default %(default)s)")
    p.add_argument("--data-dir", default=env.data_dir,
                   help="where settings and the cache live (env DATA_DIR, default %(default)s)")
    p.add_argument("--history", dest="history_s", type=int, default=env.history_s,
                   help="seconds of 1 s history kept in memory (env HISTORY_S, default %(default)s)")
    p.add_argument("--debug", action="store_true", default=env.debug,
                   help="Dash debug mode: reloader and dev tools (env DEBUG; off by default)")
    a = p.parse_args(argv)
    if a.source == "replay" and len(a.replay) < 2:
        p.error("--source replay needs --replay with a recording of each symbol of the pair")
    return AppConfig(source=a.source, binance_url=a.binance_url, host=a.host, port=a.port, data_dir=a.data_dir,
                     debug=a.debug, history_s=a.history_s, sim_seed=env.sim_seed, replay=tuple(a.replay),
                     replay_speed=a.replay_speed)


def create_app(config: AppConfig | None = None, market: MarketService | None = None) -> dash.Dash:
    """Build the Dash app and its service layer. Cheap: no network, no threads."""
    config = config or config_from_env()
    app = dash.Dash(
        __name__, use_pages=True, pages_folder=str(HERE / "pages"), assets_folder=str(HERE / "assets"),
        title="Pair Monitor", update_title=None,  # Bootswatch Darkly is served from assets/ (offline)
        suppress_callback_exceptions=True,
    )
    server = app.server
    cache = Cache(server, config={"CACHE_TYPE": "services.cache.AtomicFileSystemCache",
                                  "CACHE_DIR": str(Path(config.data_dir) / "cache"), "CACHE_THRESHOLD": 2_000})
    server.extensions["market"] = market or MarketService(config, cache)
    server.register_blueprint(create_api(PngRenderer()))

    app.layout = html.Div([
        dcc.Interval(id=ids.INTERVAL, interval=1_000),
        navbar(dash.page_registry.values()),
        dbc.Container(status_banner(), fluid=True),
        dash.page_container,
    ])
    _register_shell_callbacks(app)
    return app


def _age_badge(status: dict) -> tuple[str, str]:
    age = status["age_s"]
    if age is None:
        return ("no data: upstream error" if status["status"] == "error" else "waiting for data"), "secondary"
    when = status["last_tick_utc"][11:19] + "Z"
    if status["status"] == "stale":
        return f"STALE · last tick {age:,.0f} s ago ({when})", "danger"
    return f"live · last tick {age:.1f} s ago ({when})", "success"


def _register_shell_callbacks(app: dash.Dash) -> None:
    @app.callback(
        Output(ids.NAV_PAIR, "children"), Output(ids.SOURCE_BADGE, "children"), Output(ids.SOURCE_BADGE, "color"),
        Output(ids.AGE_BADGE, "children"), Output(ids.AGE_BADGE, "color"), Output(ids.STATUS_BANNER, "children"),
        Output(ids.INTERVAL, "interval"),
        Input(ids.INTERVAL, "n_intervals"),
    )
    def update_shell(_n):
        market = app.server.extensions["market"]
        market.refresh()
        status = market.status()
        settings = market.settings
        age_text, age_color = _age_badge(status)
        source_text, source_color = ("Simulated data", "warning") if status["simulated"] else (
            status["source_label"], "primary" if status["source"] == "replay" else "info")
        banner = []
        err = status["last_error"]
        if status["rate_limit_resumes_in_s"] is not None:
            banner.append(dbc.Alert(f"Rate-limited by the exchange (HTTP {err['status'] if err else '429'}): "
                                    f"no requests until {status['rate_limited_until_utc']}, resuming in "
                                    f"{status['rate_limit_resumes_in_s']:.0f} s.", color="warning",
                                    className="py-2 small"))
        elif err:
            banner.append(dbc.Alert(f"Upstream error at {err['time_utc']}: {err['message']}", color="danger",
                                    className="py-2 small"))
        if status["simulated"] and market.config.source == "auto":
            banner.append(dbc.Alert(f"Showing simulated data: {market.source_note}.", color="warning",
                                    className="py-2 small"))
        if status["settings_error"]:
            banner.append(dbc.Alert(status["settings_error"], color="warning", className="py-2 small"))
        return (settings.pair_label, source_text, source_color, age_text, age_color, banner,
                int(settings.poll_interval_s * 1000))

    app.clientside_callback(
        ClientsideFunction(namespace="exporter", function_name="png"),
        Output(ids.export_done(MATCH), "data"),
        Input(ids.export_button(MATCH), "n_clicks"),
        prevent_initial_call=True,
    )


def main(argv=None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    market = app.server.extensions["market"]
    try:
        status = market.status()  # opens the source: probes Binance, or reads the recordings
    except ReplayError as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("source: %s (%s)", status["source_label"], market.source_note)
    log.info("serving on http://%s:%d", config.host, config.port)
    app.run(host=config.host, port=config.port, debug=config.debug)


def __getattr__(name: str):
    """`app.server` for gunicorn, built on first access (PEP 562) so that importing this module
    for `create_app` or `main` does not build a second app."""
    if name == "server":
        globals()["server"] = create_app().server
        return globals()["server"]
    raise AttributeError(name)


if __name__ == "__main__":
    main()
