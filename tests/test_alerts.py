"""Alert rules: evaluation (crossing, hysteresis, cooldown), the shared log, delivery."""

import json
import time

import numpy as np
import pytest
from cachelib import SimpleCache
from werkzeug import Response

from scripted import ScriptedSource
from services import alerting
from services.alerts import Alert, AlertLog, Rule, RuleState, evaluate_rule
from services.db import Database, Unreachable
from services.market import MarketService
from services.netguard import WebhookPolicy
from services.notify import WebhookNotifier
from services.settings import AppConfig, SettingsError

ARMED = RuleState(armed=True)


def fire(rule, values, bound=2.0, state=ARMED, seconds=None):
    seconds = np.arange(len(values)) if seconds is None else seconds
    return evaluate_rule(rule, bound, np.array(values, float), seconds, state)


def test_abs_z_fires_once_per_crossing_and_a_gap_is_not_a_crossing():
    z = [0.5, 1.0, 2.5, 3.0, 2.1, 1.0, -2.2, -2.5, np.nan, -3.0, 0.0, 2.0]
    fired, state = fire(Rule("abs_z"), z)
    assert fired == [2, 6, 11] and state.armed is False and state.last_fired_s == 11
    assert fire(Rule("abs_z"), [2.5, np.nan, np.nan, 2.6], state=RuleState(armed=False))[0] == []


def test_an_unknown_start_only_sets_the_state():
    assert fire(Rule("abs_z"), [3.0, 3.5, 1.0, 2.5], state=RuleState())[0] == [3]


@pytest.mark.parametrize(
    "kind, bound, values, expected",
    [
        ("z_above", 2.0, [0, 2.5, 0, -2.5, 0, 2.0], [1, 5]),
        ("z_below", -2.0, [0, 2.5, 0, -2.5, 0, -2.0], [3, 5]),
        ("spread_above", 10.0, [9, 10, 11, 9.9, 12], [1, 4]),
        ("spread_below", -1.0, [0, -1.5, -0.5, -2], [1, 3]),
        ("price_above", 100.0, [99, 101, 99, 101], [1, 3]),
        ("price_below", 100.0, [101, 99, 101, 99], [1, 3]),
    ],
)
def test_each_kind_fires_on_its_side_only(kind, bound, values, expected):
    assert fire(Rule(kind, level=None if kind.startswith("z") else bound), values, bound)[0] == expected


def test_hysteresis_rearms_only_back_inside_by_the_margin():
    rule = Rule("spread_above", level=10.0, hysteresis=1.0)
    jitter = [9, 10.2, 9.5, 10.1, 9.2, 10.3, 8.9, 10.4]  # dips to 9.5 and 9.2 do not re-arm; 8.9 does
    assert fire(rule, jitter, 10.0)[0] == [1, 7]
    assert fire(Rule("spread_above", level=10.0), jitter, 10.0)[0] == [1, 3, 5, 7], "without hysteresis"


def test_cooldown_suppresses_crossings_too_soon_after_an_alert():
    rule = Rule("abs_z", cooldown_s=60)
    seconds = np.array([0, 10, 20, 30, 40, 100, 110])
    z = [3, 0, 3, 0, 0, 3, 0]
    fired, state = fire(rule, z, seconds=seconds)
    assert fired == [0, 5], "the crossing at 20 s is within 60 s of the alert at 0 s"
    fired, _ = fire(rule, [0, 3], seconds=np.array([130, 150]), state=RuleState(True, state.last_fired_s))
    assert fired == [], "the cooldown holds across calls (and restarts: last_fired_s comes from the log)"


def test_the_log_keeps_one_row_per_alert_across_processes(tmp_path):
    a = Alert(100, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", 2.5, 2.0, 2.5, 1.0)
    first, second = AlertLog(Database(tmp_path)), AlertLog(Database(tmp_path))
    assert [x.second for x in first.add([a])] == [100]
    assert second.add([a]) == [], "another worker logging the same alert delivers nothing"
    assert len(second.log()) == 1 and second.last_fired(a.rule_key, "A/B") == 100
    assert second.count("A/B") == 1 and second.count("C/D") == 0
    assert [x.second for x in second.log("A/B", since_s=100)] == [100] and second.log("A/B", since_s=101) == []
    seen = first.last_id()
    second.clear()
    b = Alert(101, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", -2.5, 2.0, -2.5, 1.0)
    [added] = first.add([b])
    assert added.id > seen and [x.id for x in second.since(seen)] == [added.id], "ids keep counting after Clear"


def test_the_log_is_pruned_to_its_cap_every_few_alerts_not_on_each(tmp_path):
    log = AlertLog(Database(tmp_path), max_rows=2, prune_every=3)
    kept = []
    for second in range(100, 106):
        log.add([Alert(second, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", 2.5, 2.0, 2.5, 1.0)])
        kept.append(sorted(a.second for a in log.log()))
    assert kept == [[100], [100, 101], [101, 102], [101, 102, 103], [101, 102, 103, 104], [104, 105]]
    log.add([Alert(106, "Test alert", "test:1", "test", "A/B", 0.0, 2.0)])  # test alerts: capped on each
    assert sorted(a.second for a in log.log()) == [104, 105, 106]


def test_rules_are_validated(tmp_path, clock):
    market = scripted_market(tmp_path, clock)
    market.save_settings({"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT"})
    for bad, message in [
        ({"kind": "nope"}, "Rule type"),
        ({"kind": "spread_above"}, "level is required"),
        ({"kind": "price_above", "level": "inf"}, "finite"),
        ({"kind": "price_above", "level": 1, "leg": "C"}, "A or B"),
        ({"kind": "abs_z", "hysteresis": -1}, "0 or more"),
        ({"kind": "abs_z", "hysteresis": 5}, "never re-arm"),
        ({"kind": "abs_z", "cooldown_s": 1.5}, "whole number"),
    ]:
        with pytest.raises(SettingsError, match=message):
            market.save_settings({"rules": [bad]})
    with pytest.raises(SettingsError, match="already"):
        market.save_settings({"rules": [{"kind": "abs_z"}, {"kind": "abs_z"}]})
    for url in ["ftp://example.com/hook", "javascript:alert(1)", "http://", "not a url"]:
        with pytest.raises(SettingsError, match="http"):
            market.save_settings({"webhook_url": url})
    assert market.current_settings().rules == (Rule("abs_z"),) and market.current_settings().webhook_url == ""


# --- in the service ------------------------------------------------------------------------
ORIGIN_OFFSET = 1_000
N = 1_600


def script_prices(seed=4):
    rng = np.random.default_rng(seed)
    spread = np.cumsum(rng.normal(size=N)) * 0.3
    spread[1_200:1_210] += 25  # a blow-out, then back
    spread[1_400:1_440] -= 30
    return {"AAAUSDT": 1_000 + spread, "BBBUSDT": np.full(N, 500.0)}


def scripted_market(tmp_path, clock, cache=None, prices=None):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_000, allow_private_webhooks=True)
    origin = int(clock()) - ORIGIN_OFFSET
    return MarketService(
        cfg, cache or SimpleCache(), clock=clock, source=ScriptedSource(clock, origin, prices or script_prices())
    )


def run_until(clock, markets, end_offset):
    origin = int(clock()) - ORIGIN_OFFSET if not hasattr(clock, "origin") else clock.origin
    while clock.now < origin + end_offset:
        clock.advance(1)
        for m in markets:
            m.refresh()


def test_two_workers_and_a_webhook_deliver_each_crossing_exactly_once(tmp_path, clock, httpserver):
    received = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda r: (received.append(json.loads(r.data)), Response("ok"))[1]
    )
    cache = SimpleCache()
    workers = [scripted_market(tmp_path, clock, cache) for _ in range(2)]
    workers[0].save_settings(
        {
            "symbol_a": "AAAUSDT",
            "symbol_b": "BBBUSDT",
            "window": 30,
            "webhook_url": httpserver.url_for("/hook"),
            "rules": [{"kind": "abs_z"}, {"kind": "spread_below", "level": 470}],
        }
    )
    clock.origin = int(clock()) - ORIGIN_OFFSET
    run_until(clock, workers, N - 2)
    for w in workers:
        assert w.notifier.wait_idle()
    log = workers[1].alerts.log()
    keys = [(a.rule_key, a.second) for a in log]
    assert len(keys) == len(set(keys)) >= 3
    assert sorted(r["id"] for r in received) == sorted(a.id for a in log), "each alert POSTed once"
    spread_alerts = [a for a in log if a.kind == "spread_below"]
    assert len(spread_alerts) == 1 and spread_alerts[0].value <= 470
    body = received[0]
    assert set(body) >= {"rule", "pair", "value", "time_utc", "zscore"} and body["pair"] == "AAAUSDT/BBBUSDT"
    assert body["time_utc"].endswith("Z")
    assert workers[0].snapshot().status.webhook["ok"] is True


def test_a_failing_webhook_never_blocks_ingestion(tmp_path, clock, httpserver):
    def slow_failure(_request):
        time.sleep(2.5)
        return Response("down", status=503)

    httpserver.expect_request("/hook").respond_with_handler(slow_failure)
    market = scripted_market(tmp_path, clock)
    market.save_settings(
        {"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT", "window": 30, "webhook_url": httpserver.url_for("/hook")}
    )
    clock.origin = int(clock()) - ORIGIN_OFFSET
    started = time.perf_counter()
    run_until(clock, [market], N - 2)
    elapsed = time.perf_counter() - started
    assert len(market.alerts.log()) >= 3
    assert elapsed < 20, f"600 refreshes with a receiver stuck for seconds per alert took {elapsed:.1f} s"
    assert market.store.latest_second("AAAUSDT") == int(clock())
    deadline = time.time() + 30
    while (market.snapshot().status.webhook or {}).get("ok") is not False:
        assert time.time() < deadline, "the failure is reported"
        time.sleep(0.1)
    assert "503" in market.snapshot().status.webhook["detail"]


def test_deliveries_go_on_while_the_database_is_down(tmp_path, httpserver, monkeypatch):
    """A delivery's status can't be stored while the database is down: the alerts queued behind
    it are still POSTed (the delivery thread goes on), and this process shows the last one."""
    received = []
    httpserver.expect_request("/while-down", method="POST").respond_with_handler(
        lambda r: (received.append(json.loads(r.data)), Response("ok"))[1]
    )
    db = Database(tmp_path)
    notifier = WebhookNotifier(db, WebhookPolicy(allow_private=True))

    def down():
        raise Unreachable("down")

    monkeypatch.setattr(db, "connection", down)
    alerts = [Alert(100 + i, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", 2.5, 2.0, 2.5, 1.0, id=i + 1) for i in range(3)]
    for alert in alerts:
        notifier.send(httpserver.url_for("/while-down"), alert)
    assert notifier.wait_idle()
    assert [r["id"] for r in received] == [1, 2, 3]
    assert notifier.status()["alert_id"] == 3 and notifier.status()["ok"] is True


def test_test_alert_goes_to_the_log_and_the_webhook(tmp_path, clock, httpserver):
    received = []
    httpserver.expect_request("/hook").respond_with_handler(
        lambda r: (received.append(json.loads(r.data)), Response("ok"))[1]
    )
    market = scripted_market(tmp_path, clock)
    market.save_settings({"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT", "webhook_url": httpserver.url_for("/hook")})
    market.refresh()
    alert = market.send_test_alert()
    assert market.notifier.wait_idle()
    assert received and received[0]["test"] is True and received[0]["id"] == alert.id
    assert market.alerts.since(alert.id - 1)[0].rule == "Test alert"


def test_alerts_missed_while_down_are_raised_after_a_restart(tmp_path, clock):
    """The last evaluated bar is persisted: a crossing that happened while the process was down
    is found in the backfilled hole when it starts again, once."""
    settings = {"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT", "window": 30, "rules": [{"kind": "z_above"}]}
    market = scripted_market(tmp_path, clock)
    market.save_settings(settings)
    clock.origin = int(clock()) - ORIGIN_OFFSET
    run_until(clock, [market], 1_150)
    before = len(market.alerts.log())
    clock.advance(100)  # down through the 1 200 s blow-out
    restarted = scripted_market(tmp_path, clock)
    restarted.source().origin = clock.origin
    restarted.refresh()
    new = restarted.alerts.log()[: len(restarted.alerts.log()) - before]
    assert any(1_200 <= a.second - clock.origin < 1_210 for a in new), "the blow-out during the downtime"
    restarted.refresh()
    assert len(restarted.alerts.log()) == before + len(new)


def test_the_watchlists_cursors_are_saved_together_in_one_write_every_few_seconds(tmp_path, clock, monkeypatch):
    prices = {**script_prices(), "CCCUSDT": np.full(N, 300.0), "DDDUSDT": np.full(N, 200.0)}
    market = scripted_market(tmp_path, clock, prices=prices)
    market.save_settings({"symbol_a": "AAAUSDT", "symbol_b": "BBBUSDT", "rules": [{"kind": "z_above"}]})
    for a, b in (("CCCUSDT", "BBBUSDT"), ("DDDUSDT", "BBBUSDT")):
        market.add_pair(a, b)
    saved = []  # the cursors of each write
    record = alerting.set_metas
    monkeypatch.setattr(alerting, "set_metas", lambda conn, values: (saved.append(values), record(conn, values)))
    clock.origin = int(clock()) - ORIGIN_OFFSET
    run_until(clock, [market], 1_100)
    sizes = [len(cursors) for cursors in saved]
    steady = sizes[sizes.index(3) :]  # the pairs' evaluations start one after another
    assert len(steady) >= 9 and set(steady) == {3}, f"once all three run, one write holds them: {sizes}"
    runs = market.alerting._runs.values()
    assert {market.db.meta(alerting._cursor_key(r.key)) for r in runs} == {str(r.saved) for r in runs}
    assert all(r.cursor - r.saved < alerting.CURSOR_SAVE_EVERY_S for r in runs)
