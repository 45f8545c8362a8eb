"""Alert delivery to the user's webhook: POST JSON from a background thread.

Ingestion only puts the alert in a bounded queue; a thread (started on the first alert, never
at import) posts it with a timeout and urllib3 retries (connection errors, 429 and 5xx, with
jittered exponential backoff). A slow or failing receiver never blocks polling: when the queue
is full the alert is dropped and that is reported. The outcome of the last delivery is kept in
the database, so every process (web workers, the collector) shows the same status.

Only addresses the `WebhookPolicy` admits are sent to (checked before the request and on the
socket), redirects are never followed, and proxies from the environment are not used (the check
must see the receiver itself). Each delivery carries `X-Pairmonitor-Delivery`, so an alert caused
by a delivery (this app's test-alert route as the receiver) is refused instead of looping.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import select

from services import metrics
from services.alerts import Alert
from services.binance import JitteredRetry
from services.db import FAILURES, Database, meta
from services.netguard import RefusedAtConnect, TargetRefused, WebhookPolicy, guarded_pool_classes
from services.settings import shown_webhook
from services.sources import iso_utc

log = logging.getLogger(__name__)
STATUS_KEY = "webhook:last"
DELIVERY_HEADER = "X-Pairmonitor-Delivery"
RETRY = JitteredRetry(
    total=2,
    connect=2,
    read=0,
    status=2,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=frozenset({"POST"}),
    backoff_factor=0.5,
    raise_on_status=False,
    respect_retry_after_header=False,
)


class WebhookNotifier:
    def __init__(self, db: Database, policy: WebhookPolicy, timeout=(2.0, 5.0), max_queue: int = 100):
        self.db = db
        self.policy = policy
        self.timeout = timeout
        self._queue: queue.Queue[tuple[str, Alert]] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy: the guard checks the receiver's own address
        for scheme in ("http://", "https://"):
            adapter = HTTPAdapter(max_retries=RETRY)
            adapter.poolmanager.pool_classes_by_scheme = guarded_pool_classes(policy)
            self._session.mount(scheme, adapter)
        db.pulse.watch(STATUS_KEY, select(meta.c.value).where(meta.c.key == STATUS_KEY))
        self._status: tuple[str | None, dict | None] = (None, None)  # (as stored, parsed)

    def send(self, url: str, alert: Alert) -> None:
        """Queue `alert` for `url`; returns at once."""
        self._ensure_thread()
        try:
            self._queue.put_nowait((url, alert))
        except queue.Full:
            self._record(alert, False, f"not sent: {self._queue.maxsize} alerts already waiting for the webhook")

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            url, alert = self._queue.get()
            try:
                self.deliver(url, alert)
            finally:
                self._queue.task_done()

    def deliver(self, url: str, alert: Alert) -> bool:
        """POST one alert (blocking, with retries); records and returns whether it arrived."""
        try:
            self.policy.check(url)
        except TargetRefused as exc:
            return self._record(alert, False, f"not sent: {exc}")
        try:
            resp = self._session.post(
                url,
                json=alert.payload(),
                headers={DELIVERY_HEADER: str(alert.id)},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            if isinstance(getattr(exc.args[0] if exc.args else None, "reason", None), RefusedAtConnect):
                return self._record(
                    alert, False, f"not sent: {shown_webhook(url)} resolved to an address that is refused"
                )
            return self._record(alert, False, f"{shown_webhook(url)} unreachable ({exc.__class__.__name__})")
        if 300 <= resp.status_code < 400:
            return self._record(
                alert, False, f"{shown_webhook(url)} answered HTTP {resp.status_code}; redirects are not followed"
            )
        if resp.status_code >= 300:
            return self._record(alert, False, f"{shown_webhook(url)} answered HTTP {resp.status_code}")
        return self._record(alert, True, f"{shown_webhook(url)} answered HTTP {resp.status_code}")

    def _record(self, alert: Alert, ok: bool, detail: str) -> bool:
        metrics.WEBHOOK_DELIVERIES.labels(outcome="ok" if ok else "failed").inc()
        if not ok:
            log.warning("webhook delivery failed for alert %s (%s): %s", alert.id, alert.rule, detail)
        status = {
            "ok": ok,
            "detail": detail,
            "time_utc": iso_utc(time.time()),
            "alert_id": alert.id,
            "rule": alert.rule,
        }
        stored = json.dumps(status)
        self._status = (stored, status)
        try:
            self.db.set_meta(STATUS_KEY, stored)
        except FAILURES:  # the database is down: this process shows it meanwhile, and the queue goes on
            log.warning("webhook status for alert %s not stored: the database did not answer", alert.id)
            return ok
        self.db.pulse.saw(STATUS_KEY, stored)
        return ok

    def status(self) -> dict | None:
        """The last delivery: ok, detail, time_utc, alert_id, rule (None before any). Read from the
        database (any process may have delivered) at most once a second (with the database's
        `Pulse`): every tab's tick shows it."""
        try:
            stored = self.db.pulse.value(STATUS_KEY)
        except FAILURES:  # a damaged file (shown as such): the last status read stays
            return self._status[1]
        if stored != self._status[0]:
            self._status = (stored, json.loads(stored) if stored else None)
        return self._status[1]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued alert was tried (tests, and the collector at exit)."""
        deadline = time.time() + timeout
        while self._queue.unfinished_tasks:
            if time.time() > deadline:
                return False
            time.sleep(0.02)
        return True
