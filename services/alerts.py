"""Alert rules, their evaluation, and the persisted alert log.

A rule watches one series of the pair — z, the spread, or a leg's price — against a level:
`|z| ≥ θ`, `z ≥ θ`, `z ≤ −θ` (θ is the pair's z threshold), or the spread or a price above or
below a level of the rule's own. It fires when the value crosses into the alert zone while the
rule is armed; it then re-arms only once the value is back inside by the rule's hysteresis
margin, and a cooldown (in market seconds) suppresses any crossing that comes too soon after the
last alert (the rule disarms as if it had fired, so it does not go off halfway through the
excursion when the cooldown ends). One alert per crossing, never one per tick or per tab.

The service evaluates rules once per closed bar, in time order, in every process that ingests
prices. Every process sees the same bars and reaches the same decisions, and the log's unique
key (rule, pair, bar) keeps exactly one row per alert: the process whose insert lands is the
one that delivers it (webhook), so several workers and the collector never double-send.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, select

from services.db import FAILURES, Database, dialect_insert
from services.db import alerts as alert_rows
from services.sources import utc_from_epoch

RULE_KINDS = {
    "abs_z": "|z| ≥ θ",
    "z_above": "z ≥ θ",
    "z_below": "z ≤ −θ",
    "spread_above": "spread above",
    "spread_below": "spread below",
    "price_above": "price above",
    "price_below": "price below",
}
Z_KINDS = ("abs_z", "z_above", "z_below")
LEGS = ("A", "B")
LAST_ID = "alerts:last-id"  # looked at once a second, with the other values of the database's Pulse
TEST_RULE = "test"
TEST_PREFIX = TEST_RULE + ":"  # a test alert's rule_key


@dataclass(frozen=True)
class Rule:
    kind: str
    level: float | None = None  # spread and price rules; z rules use the pair's threshold θ
    leg: str = "A"  # price rules: which leg of the pair
    hysteresis: float = 0.0  # re-arm once the value is back inside by this much
    cooldown_s: int = 0  # no second alert from this rule within this many seconds

    @property
    def is_z(self) -> bool:
        return self.kind in Z_KINDS

    def bound(self, threshold: float) -> float:
        """The level this rule compares against: −θ for z ≤ −θ."""
        if self.kind == "z_below":
            return -threshold
        return threshold if self.is_z else float(self.level)

    @property
    def key(self) -> str:
        """Identifies the rule in the log (the level is part of it: a new level is a new rule)."""
        level = "θ" if self.is_z else f"{self.level:g}"
        leg = self.leg if self.kind.startswith("price") else ""
        return f"{self.kind}:{level}:{leg}:{self.hysteresis:g}:{self.cooldown_s}"

    def label(self, pair=("A", "B"), threshold: float | None = None) -> str:
        if self.is_z:
            text = RULE_KINDS[self.kind].replace("θ", "θ" if threshold is None else f"{threshold:g}")
        elif self.kind.startswith("price"):
            leg = pair[LEGS.index(self.leg)]
            text = f"{leg} {RULE_KINDS[self.kind]} {self.level:g}"
        else:
            text = f"{RULE_KINDS[self.kind]} {self.level:g}"
        extras = [
            f"hysteresis {self.hysteresis:g}" if self.hysteresis else "",
            f"cooldown {self.cooldown_s} s" if self.cooldown_s else "",
        ]
        return ", ".join([text, *filter(None, extras)])


DEFAULT_RULES = (Rule("abs_z"),)


@dataclass(frozen=True)
class RuleState:
    armed: bool | None = None  # None: not known yet (the first value only sets it)
    last_fired_s: int | None = None


def _beyond(kind: str, value: float, bound: float, margin: float = 0.0) -> bool:
    """In the alert zone (margin 0), or not yet back inside by `margin`."""
    if kind == "abs_z":
        return abs(value) >= bound - margin
    if kind.endswith("below"):
        return value <= bound + margin
    return value >= bound - margin


def initial_state(rule: Rule, bound: float, value: float, last_fired_s: int | None) -> RuleState:
    """The state to start from at a bar with `value`, without firing: armed when inside."""
    armed = None if math.isnan(value) else not _beyond(rule.kind, value, bound)
    return RuleState(armed, last_fired_s)


def evaluate_rule(rule: Rule, bound: float, values, seconds, state: RuleState) -> tuple[list[int], RuleState]:
    """Indices of `values` (one per closed bar, time order) where `rule` fires, and the state
    after the last. NaN (no data) changes nothing: a gap is not a crossing."""
    armed, last = state.armed, state.last_fired_s
    fired = []
    for i, v in enumerate(np.asarray(values, float)):
        if math.isnan(v):
            continue
        if _beyond(rule.kind, v, bound):
            if armed:
                if last is None or seconds[i] - last >= rule.cooldown_s:
                    fired.append(i)
                    last = int(seconds[i])
                armed = False
            elif armed is None:
                armed = False
        elif armed is None or not _beyond(rule.kind, v, bound, rule.hysteresis):
            armed = True
    return fired, replace(state, armed=armed, last_fired_s=last)


@dataclass(frozen=True)
class Alert:
    second: int  # UTC start of the bar where the rule fired
    rule: str  # its label, as shown
    rule_key: str
    kind: str
    pair: str
    value: float  # the watched value at that bar
    level: float
    zscore: float | None = None
    spread: float | None = None
    id: int | None = None

    @property
    def time(self) -> datetime:
        return utc_from_epoch(self.second)

    @property
    def is_z(self) -> bool:
        return self.kind in Z_KINDS

    @property
    def is_test(self) -> bool:
        return self.kind == TEST_RULE

    def as_row(self) -> dict:
        return {
            "id": self.id,
            "time_utc": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pair": self.pair,
            "rule": self.rule,
            "value": _round(self.value, 6),
            "zscore": _round(self.zscore, 3),
            "spread": _round(self.spread, 6),
        }

    def payload(self) -> dict:
        """What a webhook receives."""
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "pair": self.pair,
            "value": _num(self.value),
            "level": _num(self.level),
            "zscore": _num(self.zscore),
            "spread": _num(self.spread),
            "time_utc": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "test": self.is_test,
        }


def _num(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _round(x, digits):
    x = _num(x)
    return None if x is None else round(x, digits)


COLUMNS = tuple(
    alert_rows.c[name] for name in ("id", "second", "rule", "rule_key", "pair", "value", "level", "zscore", "spread")
)
IS_TEST = alert_rows.c.rule_key.like(TEST_PREFIX + "%")
# Real alerts a process logs between its prunes of the log. A prune reads the newest max_rows ids
# (1.2 ms of CPU at 10,000 on SQLite, three times the insert), so it is not paid on every alert.
PRUNE_EVERY = 64


@functools.cache
def _add_statements(dialect: str, max_rows: int, max_test_rows: int):
    """An add's statements in `dialect`, built once (building them cost more than running them):
    the insert of one alert (its id, or none if another process logged it first), and for real and
    for test alerts, the delete of all but the newest `cap` of that kind."""
    put = dialect_insert(dialect, alert_rows).on_conflict_do_nothing().returning(alert_rows.c.id)
    prune = {}
    for test, cap in ((False, max_rows), (True, max_test_rows)):
        kind = IS_TEST if test else ~IS_TEST
        newest = select(alert_rows.c.id).where(kind).order_by(alert_rows.c.id.desc()).limit(cap).subquery()
        oldest_kept = select(func.min(newest.c.id)).scalar_subquery()
        prune[test] = delete(alert_rows).where(kind, alert_rows.c.id < oldest_kept)
    return put, prune


class AlertLog:
    """The alert log in the embedded database: shared by every process, kept across restarts."""

    def __init__(self, db: Database, max_rows: int = 10_000, max_test_rows: int = 100, prune_every: int = PRUNE_EVERY):
        self.db = db
        self.max_rows = max_rows  # real alerts kept (up to `prune_every` more per process between prunes)
        self.max_test_rows = max_test_rows  # test alerts kept, apart: they never evict a real one
        self.prune_every = prune_every
        self._unpruned = 0  # real alerts this process logged since it last pruned them
        self._last_id = 0
        db.pulse.watch(LAST_ID, select(func.coalesce(func.max(alert_rows.c.id), 0)))

    def add(self, alerts: list[Alert]) -> list[Alert]:
        """Insert alerts; returns those that were new (an alert another process logged first is
        not returned, so it is delivered once)."""
        added = []
        with self.db.write() as conn:
            put, prune = _add_statements(conn.dialect.name, self.max_rows, self.max_test_rows)
            for a in alerts:
                row = {
                    "rule_key": a.rule_key,
                    "rule": a.rule,
                    "pair": a.pair,
                    "second": a.second,
                    "value": _num(a.value),
                    "level": _num(a.level),
                    "zscore": _num(a.zscore),
                    "spread": _num(a.spread),
                    "created_ns": time.time_ns(),
                }
                new_id = conn.execute(put, row).scalar()
                if new_id is not None:
                    added.append(replace(a, id=new_id))
            real = sum(not a.is_test for a in added)
            prune_real = self._unpruned + real >= self.prune_every
            for test in {a.is_test for a in added}:
                if test or prune_real:
                    conn.execute(prune[test])
        self._unpruned = 0 if prune_real else self._unpruned + real
        if added:
            self.db.pulse.saw(LAST_ID, max(self._last_id, *(a.id for a in added)))
        return added

    def last_test_ns(self) -> int | None:
        """When the newest test alert was logged (by any process), in ns."""
        return self.db.query(select(func.max(alert_rows.c.created_ns)).where(IS_TEST))[0][0]

    def _read(self, statement, default=None):
        """Rows of a read, or `default` when the database can't be read: the pages go on (and say
        so, from `Database.fault` or `.outage`) instead of failing."""
        try:
            return self.db.query(statement)
        except FAILURES:
            return default

    def _rows(self, *where, limit: int | None = None) -> list[Alert] | None:
        """Alerts, newest first; None when the log can't be read."""
        statement = select(*COLUMNS).where(*where).order_by(alert_rows.c.id.desc())
        if limit:
            statement = statement.limit(int(limit))
        rows = self._read(statement)
        return None if rows is None else [self._alert(*row) for row in rows]

    @staticmethod
    def _alert(id_, second, rule, rule_key, pair, value, level, zscore, spread) -> Alert:
        kind = rule_key.split(":", 1)[0]
        nan = float("nan")
        return Alert(
            second,
            rule,
            rule_key,
            kind,
            pair,
            nan if value is None else value,
            nan if level is None else level,
            zscore,
            spread,
            id_,
        )

    def log(self, pair: str | None = None, limit: int | None = None, since_s: int | None = None) -> list[Alert]:
        """Alerts, newest first: for one pair or all, at bars from `since_s` on or all."""
        return self.read_log(pair, limit, since_s) or []

    def read_log(self, pair: str | None = None, limit: int | None = None, since_s: int | None = None):
        """`log`, or None when the log can't be read."""
        where = [alert_rows.c.pair == pair] if pair is not None else []
        where += [alert_rows.c.second >= since_s] if since_s is not None else []
        return self._rows(*where, limit=limit)

    def count(self, pair: str, since_s: int | None = None) -> int | None:
        """How many alerts `pair` has in the log (None when the log can't be read); with
        `since_s`, the rules' alerts at bars from then on (test alerts left out)."""
        statement = select(func.count()).select_from(alert_rows).where(alert_rows.c.pair == pair)
        if since_s is not None:
            statement = statement.where(alert_rows.c.second >= since_s, ~IS_TEST)
        rows = self._read(statement)
        return rows[0][0] if rows else None

    def since(self, alert_id: int, limit: int = 20) -> list[Alert]:
        """Alerts logged after `alert_id` (any process), newest first: for toasts."""
        return self._rows(alert_rows.c.id > alert_id, limit=limit) or []

    def last_id(self) -> int:
        """The newest alert's id, at most a second old (the database's `Pulse`), and at once for an
        alert this process logged (the last one read while the log can't be read)."""
        with contextlib.suppress(*FAILURES):
            self._last_id = self.db.pulse.value(LAST_ID)
        return self._last_id

    def last_fired(self, rule_key: str, pair: str) -> int | None:
        statement = select(func.max(alert_rows.c.second)).where(
            alert_rows.c.rule_key == rule_key, alert_rows.c.pair == pair
        )
        return self.db.query(statement)[0][0]

    def clear(self) -> None:
        """Empty the log (ids keep counting up, so open tabs do not toast old alerts again)."""
        with self.db.write() as conn:
            conn.execute(delete(alert_rows))
