"""Prometheus metrics (`GET /metrics`), correct under several gunicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set before the app starts (the gunicorn config in `deploy/` sets
it), every worker writes its samples to that directory and `/metrics` adds them up across
workers; without it (the dev server, the collector) the process's own registry is served.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # the *_created series say nothing a scraper needs

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

UPSTREAM_REQUESTS = Counter(
    "pairmonitor_upstream_requests", "Requests to the exchange's REST API", ["endpoint", "status"]
)
ANALYSIS_RECOMPUTES = Counter(
    "pairmonitor_analysis_recomputes", "Full restarts of an analysis from its anchor (a write older than the watermark)"
)
TICKS_LATE = Counter("pairmonitor_ticks_late", "Live ticks that landed after their second had closed")
TICKS_INGESTED = Counter("pairmonitor_ticks_ingested", "Live ticks stored")
CALLBACK_SECONDS = Histogram(
    "pairmonitor_callback_seconds", "Time to answer a tab's tick callback", ["page"], buckets=LATENCY_BUCKETS
)
POLL_SECONDS = Histogram(
    "pairmonitor_poll_seconds", "Time of one upstream poll, answer or error", buckets=LATENCY_BUCKETS
)
ALERTS = Counter("pairmonitor_alerts", "Alerts logged by this deployment", ["kind"])
WEBHOOK_DELIVERIES = Counter("pairmonitor_webhook_deliveries", "Webhook deliveries by outcome", ["outcome"])
STREAM_MESSAGES = Counter("pairmonitor_stream_messages", "Messages received on the exchange's WebSocket stream")
STREAM_MALFORMED = Counter("pairmonitor_stream_malformed", "Stream messages that were not JSON events (skipped)")
STREAM_RECONNECTS = Counter(
    "pairmonitor_stream_reconnects", "Connections to the stream made again (drop, stall, shutdown)"
)
STREAM_FILLED = Counter(
    "pairmonitor_stream_filled_seconds", "Seconds of a stream's hole filled with their last trade (1 s klines)"
)
CACHE_FAILOVERS = Counter(
    "pairmonitor_cache_failovers", "Times Redis stopped answering and this process went on with its own cache"
)
DB_UNWRITTEN = Gauge(
    "pairmonitor_db_unwritten_rows",
    "Rows held in memory because the database did not answer, written when it does",
    ["kind"],
    multiprocess_mode="livesum",
)
DB_DROPPED = Counter(
    "pairmonitor_db_dropped_rows", "Rows dropped, oldest first, when the unwritten rows reached their bound", ["kind"]
)
REFRESH_ERRORS = Counter("pairmonitor_refresh_errors", "Refreshes that failed inside the app (database, ingest)")


def exposition() -> tuple[bytes, str]:
    """The text format of every metric, summed across workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
