"""The tick: one refresh, then a snapshot that includes that tick's poll; readers only read;
shared work once; errors inside the app are shown like upstream errors, never raised."""

import sqlite3
import threading
import time

import pytest
from cachelib import SimpleCache

from components import ids
from services import alerting, metrics, stats
from services.binance import BinanceClient
from services.cache import AtomicFileSystemCache
from services.market import MarketService
from services.settings import AppConfig
from services.sources import BinanceSource, SimSource

TICKER = "/api/v3/ticker/price"


def binance_market(fake, tmp_path, cache=None):
    cfg = AppConfig(source="binance", binance_url=fake.url, data_dir=str(tmp_path))
    return MarketService(cfg, cache or SimpleCache(), source=BinanceSource(BinanceClient(fake.url)))


def wait_next_second(margin=0.05):
    time.sleep(1 - time.time() % 1 + margin)


def test_a_tick_that_arrives_while_the_poll_is_in_flight_shows_that_poll(fake_binance, tmp_path):
    """Two tabs tick in the same second: the first polls (the exchange takes 0.4 s), the second
    waits for it instead of showing the previous poll."""
    market = binance_market(fake_binance, tmp_path)
    market.tick()
    wait_next_second()
    fake_binance.delay_next(TICKER, 0.4)
    first = threading.Thread(target=market.tick)
    first.start()
    time.sleep(0.1)
    snap = market.tick()
    first.join()
    second = int(snap.now)
    assert fake_binance.served["BTCUSDT"].get(second) is not None, "the poll of this second was answered"
    assert snap.status.leg("BTCUSDT").last_tick_utc[:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    assert market.store.last_tick("BTCUSDT").price == fake_binance.served["BTCUSDT"][second]


def test_a_worker_that_lost_the_slot_waits_for_the_winners_ticks(fake_binance, tmp_path):
    cache = AtomicFileSystemCache(str(tmp_path / "cache"))
    workers = [binance_market(fake_binance, tmp_path, cache) for _ in range(2)]
    for w in workers:
        w.tick()
    wait_next_second()
    fake_binance.delay_next(TICKER, 0.3)
    winner = threading.Thread(target=workers[0].tick)
    winner.start()
    time.sleep(0.1)
    snap = workers[1].tick()  # lost the slot: the answer is still on its way
    winner.join()
    second = int(snap.now)
    assert sum(int(t) == second for t in fake_binance.times[TICKER]) == 1, "one upstream call for both workers"
    assert workers[1].store.last_tick("BTCUSDT").price == fake_binance.served["BTCUSDT"][second]
    assert int(workers[1].store.last_tick("BTCUSDT").epoch) == second


def test_an_error_inside_refresh_is_recorded_and_shown_never_raised(tmp_path, clock, monkeypatch):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=SimSource(seed=7, span_s=3_600, clock=clock))
    market.tick()
    errors = metrics.REFRESH_ERRORS._value.get()

    def locked(*_a, **_kw):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(market.ingestion, "ingest", locked)
    clock.advance(1)
    snap = market.tick()  # no exception
    assert "Internal error while refreshing (OperationalError: database is locked)" in snap.status.last_error.message
    assert metrics.REFRESH_ERRORS._value.get() == errors + 1
    monkeypatch.undo()
    clock.advance(1)
    assert market.tick().status.last_error is None, "the next good poll clears it"


def test_statistics_are_computed_once_however_many_tabs_miss_together(tmp_path, clock, monkeypatch):
    cfg = AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)
    market = MarketService(cfg, SimpleCache(), clock=clock, source=SimSource(seed=7, span_s=3_600, clock=clock))
    snap = market.tick()
    calls = []
    summary = stats.summary

    def counted(*a):
        calls.append(1)
        time.sleep(0.2)  # an ADF that takes a while: every tab arrives during it
        return summary(*a)

    monkeypatch.setattr(stats, "summary", counted)
    results = []
    tabs = [threading.Thread(target=lambda: results.append(market.statistics(snap, 60))) for _ in range(8)]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join()
    assert len(calls) == 1 and len(results) == 8
    assert all(r["adf"] == results[0]["adf"] for r in results)


@pytest.mark.parametrize("path", ["/", "/live", "/analytics", "/settings", "/backtest", "/nowhere"])
def test_every_page_tick_is_one_request_that_answers(tmp_path, path):
    from app import create_app
    from dash_client import Tab

    client = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)).server.test_client()

    def post(body):
        resp = client.post("/_dash-update-component", json=body)
        return resp.status_code, resp.get_json()

    tab = Tab(post, path)
    first = tab.tick()
    assert first[ids.NAV_PAIR]["children"] == "BTCUSDT/ETHUSDT" and first[ids.TICK]["data"]["path"] == path
    time.sleep(1.05)
    second = tab.tick()
    values = second[ids.TICK]["data"]["values"]
    for key, update in values.items():
        if key.endswith(".figure"):
            assert "figure" not in update and update["traces"], f"{key}: a tail, not a whole figure, once drawn"


@pytest.mark.parametrize(
    "path, view, cursor",
    [
        (["not", "a", "path"], {"range": "15m"}, None),
        ("/analytics", {"range": ["15m"], "corr": {"x": 1}}, {"an-z-graph": {"key": 1, "final": "soon"}}),
        ("/live", {"range": None}, {"live-price-graph": "garbage", "ticks": [1, 2]}),
        ("/", {"sort": ["|z|"]}, "garbage"),
        ("/settings", {}, ["not", "a", "dict"]),
    ],
)
def test_a_crafted_tick_gets_an_answer_not_a_500(tmp_path, path, view, cursor):
    from app import create_app
    from dash_client import tick_payload

    client = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)).server.test_client()
    body = tick_payload(1, path, cursor=cursor, view=view)
    if not isinstance(path, str):
        body["state"][1] = []  # no page cursor store matches a path that is not one
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data[:300]
    assert resp.get_json()["response"][ids.NAV_PAIR]["children"] == "BTCUSDT/ETHUSDT"


@pytest.mark.parametrize("seen", ["abc", [1], {"id": 1}, 1e308, -(10**30), None])
def test_a_crafted_last_seen_alert_starts_the_tab_from_the_newest(tmp_path, seen):
    """What a tab has seen is the newest alert id the app gave it; anything else is a tab that has
    seen nothing yet: it gets the newest id and no toasts (never a query on a crafted value)."""
    from app import create_app
    from dash_client import tick_payload

    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    newest = app.server.extensions["market"].send_test_alert().id
    resp = app.server.test_client().post("/_dash-update-component", json=tick_payload(1, "/", seen=seen))
    assert resp.status_code == 200, resp.data[:300]
    answer = resp.get_json()["response"]
    assert answer[ids.ALERT_SEEN]["data"] == newest and ids.TOASTS not in answer


def test_tabs_that_have_seen_the_same_alert_read_the_new_ones_once(tmp_path, monkeypatch):
    from app import create_app
    from dash_client import tick_payload

    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    market, client = app.server.extensions["market"], app.server.test_client()
    monkeypatch.setattr(alerting, "TEST_ALERT_GAP_S", 0)
    seen = market.send_test_alert().id
    newest = market.send_test_alert().id
    reads = []
    since = market.alerts.since
    monkeypatch.setattr(market.alerts, "since", lambda alert_id: reads.append(alert_id) or since(alert_id))
    for _ in range(4):  # four tabs, each one tick behind the new alert
        answer = client.post("/_dash-update-component", json=tick_payload(3, "/", seen=seen)).get_json()["response"]
        assert answer[ids.ALERT_SEEN]["data"] == newest and len(answer[ids.TOASTS]["children"]) == 1
    assert reads == [seen]


def test_the_alert_count_card_is_read_once_per_new_alert_and_a_failed_read_is_not_kept(tmp_path, monkeypatch):
    """Four /analytics tabs ticking read the alert log's count once; a new alert is counted on the
    next second's tick (the newest alert's id is read once a second); a count the database could
    not give shows '–' and is asked again on the next tick."""
    from app import create_app
    from dash_client import Tab

    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    market, client = app.server.extensions["market"], app.server.test_client()
    market.save_settings({"rules": []})  # only the test alerts sent here: the simulation's z crosses ±2 too
    monkeypatch.setattr(alerting, "TEST_ALERT_GAP_S", 0)
    reads, failing = [], []
    count = market.alerts.count

    def counting(pair, since_s=None):
        reads.append(pair)
        return None if failing else count(pair, since_s)

    monkeypatch.setattr(market.alerts, "count", counting)

    def post(body):
        resp = client.post("/_dash-update-component", json=body)
        return resp.status_code, resp.get_json()

    tabs = [Tab(post, "/analytics") for _ in range(4)]

    def shown() -> set:
        return {tab.tick()[ids.TICK]["data"]["values"][f"{ids.Analytics.STAT_ALERTS}.children"] for tab in tabs}

    assert shown() == {"0"} and reads == ["BTCUSDT/ETHUSDT"]
    market.send_test_alert()
    wait_next_second()
    assert shown() == {"1"} and len(reads) == 2
    market.send_test_alert()
    failing.append(True)
    wait_next_second()
    assert shown() == {"–"} and len(reads) == 6  # every tab's read failed: each asked again
    failing.clear()
    assert shown() == {"2"} and len(reads) == 7
    assert shown() == {"2"} and len(reads) == 7


def test_the_z_charts_markers_are_read_once_per_new_alert_and_a_failed_read_is_not_kept(tmp_path, monkeypatch):
    """The markers of a range are read once for every tab and chart, again when an alert is
    logged (not each second: the range's start moving on drops the older ones without a read);
    a read that failed shows none and is asked again."""
    from app import create_app

    market = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600)).server.extensions["market"]
    market.save_settings({"rules": []})  # only the test alerts sent here: the simulation's z crosses ±2 too
    monkeypatch.setattr(alerting, "TEST_ALERT_GAP_S", 0)
    reads, failing = [], []
    read_log = market.alerts.read_log

    def reading(pair=None, limit=None, since_s=None):
        reads.append(since_s)
        return None if failing else read_log(pair, limit, since_s)

    monkeypatch.setattr(market.alerts, "read_log", reading)
    snap = market.tick()
    start = snap.now_s - 900
    assert [market.alert_marks(snap, 900, start) for _ in range(4)] == [[]] * 4 and reads == [start]
    first = market.send_test_alert()
    wait_next_second()
    snap = market.tick()
    assert [market.alert_marks(snap, 900, start + 1) for _ in range(4)] == [[first]] * 4 and len(reads) == 2
    assert market.alert_marks(snap, 900, first.second + 1) == [] and len(reads) == 2, "dropped here, not read"
    assert market.alert_marks(snap, 900, start - 10) == [first] and len(reads) == 3, "an earlier start is read"
    failing.append(True)
    second = market.send_test_alert()
    wait_next_second()
    snap = market.tick()
    assert [market.alert_marks(snap, 900, start + 2) for _ in range(2)] == [[]] * 2 and len(reads) == 5
    failing.clear()
    assert [market.alert_marks(snap, 900, start + 2) for _ in range(2)] == [[second, first]] * 2 and len(reads) == 6


def test_dash_is_set_up_before_the_first_request_of_a_served_app(tmp_path):
    """`python app.py` and each gunicorn worker set Dash up on one thread before serving, so two
    first requests on two threads never race in Dash's own set-up (plotly/dash#2925)."""
    from app import create_app, set_up_dash

    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=3_600))
    assert not app._got_first_request["setup_server"]
    set_up_dash(app.server)
    assert app._got_first_request["setup_server"]
    resp = app.server.test_client().get("/_dash-layout")
    assert resp.status_code == 200 and resp.get_json()["props"]["children"]
