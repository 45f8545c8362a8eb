"""Alert evaluation: the rules of each watched pair over each of its final bars, once, in time order.

The last evaluated bar is kept in the database per pair, parameters and rules (every few seconds),
so after a restart the bars backfilled into the hole are evaluated too (nothing missed); a rule change starts from
the newest bar without firing on the past. Bars are evaluated once they are final (past the
lateness window), so a late tick can never un-fire an alert. The process whose insert lands in
the log delivers the alert (webhook); the others find it already there.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services import metrics
from services.alerts import TEST_RULE, Alert, AlertLog, RuleState, evaluate_rule, initial_state
from services.db import FAILURES, Backlog, Database, set_metas
from services.engine import PairEngine
from services.notify import WebhookNotifier
from services.settings import DatabaseDown, UserSettings
from services.sources import iso_utc

log = logging.getLogger(__name__)

# The last evaluated bar is saved this often (and with every alert). After a crash the bars since
# are evaluated again: an alert found twice is one row in the log and is delivered once.
CURSOR_SAVE_EVERY_S = 10
MAX_UNLOGGED = 10_000  # alerts held while the database does not answer (the log keeps as many)
TEST_ALERT_GAP_S = 5.0  # test alerts are rate-limited: a button held down, or a script, is not a flood


class TooSoonForTestAlert(Exception):
    def __init__(self, wait_s: float):
        self.retry_after_s = math.ceil(wait_s)  # whole seconds, as Retry-After says them
        super().__init__(
            f"A test alert was sent less than {TEST_ALERT_GAP_S:g} s ago; try again in {self.retry_after_s} s"
        )


def rule_series(rule, cols: dict[str, np.ndarray]) -> np.ndarray:
    """The values a rule watches (from an engine's columns): z, the spread, or a leg's price."""
    if rule.is_z:
        return cols["zscore"]
    if rule.kind.startswith("spread"):
        return cols["spread"]
    return cols["a" if rule.leg == "A" else "b"]


def _cursor_key(key) -> str:
    return "alerts:cursor:" + hashlib.sha1(repr(key).encode()).hexdigest()


@dataclass
class _Run:
    """A pair's evaluation: what it is for (parameters, threshold, rules), the last bar evaluated,
    the last one saved in the database, and each rule's state."""

    key: tuple
    cursor: int
    saved: int
    states: dict[str, RuleState]
    found: bool = False  # an alert since the last save: the cursor is saved with the next write


class AlertEvaluator:
    def __init__(self, db: Database, log_: AlertLog, notifier: WebhookNotifier):
        self.db = db
        self.log = log_
        self.notifier = notifier
        self._runs: dict[tuple[str, str], _Run] = {}  # per watched pair
        # alerts found while the database did not answer: logged (and delivered, if this process
        # logs them first) once it does, the oldest dropped past the bound
        self.unlogged = Backlog("alerts", MAX_UNLOGGED)

    def keep(self, pairs) -> None:
        """Forget the evaluation state of pairs no longer watched (their cursors stay saved)."""
        for pair in [p for p in self._runs if p not in pairs]:
            del self._runs[pair]

    def evaluate(self, settings: UserSettings, engine: PairEngine) -> None:
        """Run the pair's rules over every final bar of its `engine` not evaluated yet (the engine
        is up to date)."""
        if engine.end is None:
            return
        params = engine.p
        key = (params, settings.threshold, settings.rules)
        run = self._runs.get(params.pair)
        if run is None or run.key != key:
            run = self._runs[params.pair] = self._start(key, settings, engine)
        if engine.end <= run.cursor:
            return  # no bar became final since the last look (most ticks of most tabs)
        seconds, cols = engine.final_after(run.cursor)
        if not len(seconds):
            return
        found = []
        for rule in settings.rules:
            values = rule_series(rule, cols)
            bound = rule.bound(settings.threshold)
            fired, run.states[rule.key] = evaluate_rule(rule, bound, values, seconds, run.states[rule.key])
            found += [
                Alert(
                    int(seconds[i]),
                    rule.label(params.pair, settings.threshold),
                    rule.key,
                    rule.kind,
                    settings.pair_label,
                    float(values[i]),
                    bound,
                    float(cols["zscore"][i]),
                    float(cols["spread"][i]),
                )
                for i in fired
            ]
        run.cursor = int(seconds[-1])
        run.found = run.found or bool(found)
        self.log_and_deliver(found, settings)

    def save_cursors(self) -> None:
        """Once a pair found an alert or moved on by CURSOR_SAVE_EVERY_S since its last save,
        save the last evaluated bar of every pair that moved: one write for the whole watchlist
        every few seconds (after it is evaluated), not one per pair."""
        runs = self._runs.values()
        if not any(run.found or run.cursor - run.saved >= CURSOR_SAVE_EVERY_S for run in runs):
            return
        moved = [run for run in runs if run.cursor != run.saved]
        with self.db.write() as conn:
            set_metas(conn, {_cursor_key(run.key): str(run.cursor) for run in moved})
        for run in moved:
            run.saved, run.found = run.cursor, False

    def log_and_deliver(self, found: list[Alert], settings: UserSettings) -> None:
        """Log `found` with any alerts left unlogged, and deliver those this process logged first.
        While the database does not answer they wait (the evaluation goes on: its cursor is kept
        in memory)."""
        if not found and not self.unlogged.rows:
            return
        batch = {**self.unlogged.rows, **{(a.rule_key, a.pair, a.second): a for a in found}}
        try:
            added = self.log.add(sorted(batch.values(), key=lambda a: a.second))
        except FAILURES:
            self.unlogged.keep(batch)
            return
        self.unlogged.clear()
        self.deliver(added, settings)

    def _start(self, key, settings: UserSettings, engine: PairEngine) -> _Run:
        """A pair's evaluation from its saved cursor (or its newest bar); raises if the database
        can't be read, so that the next refresh starts over."""
        saved = self.db.meta(_cursor_key(key))
        start = int(saved) if saved is not None and int(saved) <= engine.end else engine.end
        times, at = engine.final_after(start - 1)
        if not len(times) or int(times[0]) != start:
            start, (_, at) = engine.end, engine.final_after(engine.end - 1)
        states = {
            rule.key: initial_state(
                rule,
                rule.bound(settings.threshold),
                float(rule_series(rule, at)[0]),
                self.log.last_fired(rule.key, settings.pair_label),
            )
            for rule in settings.rules
        }
        return _Run(key, start, 0, states)

    def deliver(self, alerts: list[Alert], settings: UserSettings) -> None:
        """Alerts this process logged first: to the log (pages toast them) and the webhook."""
        for alert in alerts:
            metrics.ALERTS.labels(kind=alert.kind).inc()
            log.info("alert %s: %s at %s, value %.6g", alert.pair, alert.rule, iso_utc(alert.second), alert.value)
            if settings.webhook_url:
                self.notifier.send(settings.webhook_url, alert)

    def send_test(self, settings: UserSettings, now: float, latest: pd.Series | None) -> Alert:
        """A test alert through every channel: the log (so every open page toasts it) and the
        webhook when one is set. At most one per TEST_ALERT_GAP_S across processes, else
        TooSoonForTestAlert; DatabaseDown when the log can't be read or written."""
        try:
            return self._send_test(settings, now, latest)
        except FAILURES:
            raise DatabaseDown("sent") from None

    def _send_test(self, settings: UserSettings, now: float, latest: pd.Series | None) -> Alert:
        last = self.log.last_test_ns()
        wait = TEST_ALERT_GAP_S - (time.time_ns() - last) / 1e9 if last is not None else 0.0
        if wait > 0:
            raise TooSoonForTestAlert(wait)
        z, spread = (float(latest["zscore"]), float(latest["spread"])) if latest is not None else (None, None)
        alert = Alert(
            int(now),
            "Test alert",
            f"{TEST_RULE}:{time.time_ns()}",
            TEST_RULE,
            settings.pair_label,
            z if z is not None else float("nan"),
            settings.threshold,
            z,
            spread,
        )
        [alert] = self.log.add([alert])
        self.deliver([alert], settings)
        return alert
