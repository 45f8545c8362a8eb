"""The scanner's job workers (Celery), when the deployment has a Redis (--cache-url).

Dash's background callbacks (the scans) then run on `celery -A app:celery_app worker`, queued
through the same Redis and answered through it (app.py gives Dash a CeleryManager on this Celery
app). A scan started through one host is followed, cancelled and read through any other, so the
load balancer needs no sticky sessions; deploy/ has the worker's unit and compose service. A task
runs inside the web app's context, as a callback does there. Without a Redis, the scans run in a
process the web worker forks (Dash's DiskcacheManager): nothing to start.
"""

from __future__ import annotations

from flask import Flask

from services.scanner import SLOT_MAX_S

RESULT_TTL_S = 3600  # a finished scan's result waits this long for its page to read it
REDIS_TIMEOUT_S = 2  # a Redis that does not answer within this fails the request that needed it


def unreachable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says that Redis did not answer: a scan not queued, or its
    progress not read."""
    import redis
    from kombu.exceptions import OperationalError

    while exc is not None:
        if isinstance(exc, (OperationalError, redis.ConnectionError, redis.TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def celery_app(url: str, server: Flask):
    """A Celery app on the Redis at `url` (broker and results) whose tasks run in `server`'s app
    context. Each task runs in a fresh child process (the scan's memory goes back to the system
    when it ends), one at a time per child, never retried: a cancelled or failed scan is said,
    and asked again by its user."""
    from celery import Celery, Task

    class InTheApp(Task):
        def __call__(self, *args, **kwargs):
            with server.app_context():
                return super().__call__(*args, **kwargs)

    fail_fast = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
    jobs = Celery("pair-monitor", broker=url, backend=url, task_cls=InTheApp)
    jobs.conf.update(
        broker_connection_retry_on_startup=True,  # a worker waits for Redis; it logs each attempt
        broker_connection_timeout=REDIS_TIMEOUT_S,
        broker_transport_options={
            **fail_fast,
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
        },
        task_publish_retry_policy=fail_fast,
        result_backend_transport_options={"retry_policy": fail_fast},
        redis_socket_timeout=REDIS_TIMEOUT_S,
        redis_socket_connect_timeout=REDIS_TIMEOUT_S,
        result_expires=RESULT_TTL_S,
        task_time_limit=SLOT_MAX_S,  # the scan slot's own bound: a scan running longer has hung
        worker_max_tasks_per_child=1,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    return jobs
