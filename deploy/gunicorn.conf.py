"""gunicorn for the web app: `gunicorn -c deploy/gunicorn.conf.py app:server`.

Threads in one process (`-k gthread`) by default: every tab's tick is served from one process's
memory — one engine per analysis, one memo of shared renders — so work that is the same for every
tab is done once, and a tick that waits for the poll in flight holds a thread, not a process.
More processes (WEB_CONCURRENCY) still poll once per interval and deliver each alert once (the
shared cache and database see to it), but each keeps its own analyses.

The app reads its own settings from the environment (SOURCE, DATA_DIR, BINANCE_BASE_URL, ...;
see the README). /metrics adds up every worker's samples through PROMETHEUS_MULTIPROC_DIR,
emptied at each start.
"""

import os
import shutil
import tempfile

bind = os.environ.get("BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8050')}")
if not bind.startswith(("unix:", "fd://")):  # the app knows where it listens: beyond loopback it needs a login
    os.environ["HOST"] = bind.rsplit(":", 1)[0].strip("[]")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("WEB_THREADS", "64"))  # one per open tab's tick in flight, with room
keepalive = 10  # each tab keeps its connection for its ticks
timeout = 30
graceful_timeout = 10

metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"pairmonitor-metrics-{os.getpid()}")
)
shutil.rmtree(metrics_dir, ignore_errors=True)
os.makedirs(metrics_dir, exist_ok=True)


def child_exit(_server, worker):
    """A worker that died stops counting in the live gauges (counters keep its totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(_worker):
    """Open the source as a worker starts, as `python app.py` does, not on its first request: a
    stream source then takes its part in the deployment's one connection at once. Dash is set up
    then too, before the worker's threads take requests (`app.set_up_dash`)."""
    from app import open_market, server, set_up_dash

    open_market(server.extensions["market"])
    set_up_dash(server)


def worker_exit(_server, _worker):
    """A worker that stops hands the stream connection on at once (not after its lease runs out)."""
    import sys

    built = vars(sys.modules["app"]).get("server") if "app" in sys.modules else None
    if built is not None:  # (a worker that failed to boot has nothing to hand on)
        built.extensions["market"].close()
