"""Per-client rate limits on the API's expensive and state-changing routes (Flask-Limiter).

A client is its signed-in user (or token's), else its address (the client's, behind a trusted
proxy). The counts live where the processes share state: on the deployment's Redis with
`--cache-url`, so a flood spread over several hosts is counted once; in each process's memory
otherwise, and while Redis does not answer. Past a limit the answer is a 429 with `Retry-After`.
"""

from __future__ import annotations

import math
import time

from flask import Flask, request
from flask_limiter import Limiter

from services import auth

EXPORTS = "60 per minute"  # CSV and PNG: each can be a day of data
SCANS = "20 per minute"
TEST_ALERTS = "6 per minute"  # besides the one-per-5-s gap every process shares
CHANGES = "60 per minute"  # settings and watchlist writes


def client() -> str:
    """Whom a request counts against."""
    user = auth.who() if "auth" in _extensions() else None
    return f"user:{user.name}" if user is not None else f"addr:{request.remote_addr}"


def _extensions() -> dict:
    from flask import current_app

    return current_app.extensions


def make(server: Flask, cache_url: str) -> Limiter:
    """This app's limiter (its own counts: apps in one process, as the tests make, never share them)."""
    server.config["RATELIMIT_STORAGE_URI"] = cache_url or "memory://"
    if cache_url:  # a Redis that does not answer costs a request a second at most, then memory counts
        server.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_connect_timeout": 1, "socket_timeout": 1}
    limiter = Limiter(
        client,
        app=server,
        in_memory_fallback_enabled=True,  # Redis down: each process counts on its own meanwhile
        key_prefix="pairmonitor",
    )  # (no headers on every answer: a route's own Retry-After, e.g. an export's 503, stays its own)
    # Only the API's routes carry limits: every other request (each tab's tick, every second) skips
    # the limiter's lookup of its route's limits (about 3 % of the app's CPU with 4 tabs open).
    limiter.request_filter(lambda: request.blueprint != "api")
    return limiter


def retry_after_s(limiter: Limiter) -> int:
    """Seconds until the limit this request broke lets the client in again (at least 1)."""
    current = limiter.current_limit
    return max(1, math.ceil(current.reset_at - time.time())) if current is not None else 60
