"""The dashboard in headless Chromium (dash[testing]): every page and every user action."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from selenium.common.exceptions import ElementClickInterceptedException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from werkzeug import Response
from werkzeug.security import generate_password_hash

from app import create_app
from components import ids
from components.ids import Analytics as analytics
from components.ids import Live as live
from components.ids import Scanner as scanner
from components.ids import Settings as settings
from loopback import free_port, wait_for
from services.db import Database
from services.settings import AppConfig, SettingsStore, UserSettings, validate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULTS = {"symbol_a": "BTCUSDT", "symbol_b": "ETHUSDT", "threshold": 2.0, "poll_interval_s": 1}


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def sim_app(data_dir):
    return create_app(AppConfig(source="sim", data_dir=str(data_dir), history_s=3_600))


def saved_settings(data_dir):
    """What the app saved, read as another process would: None while it is what the app started
    with (the defaults, stored at its first start)."""
    saved = SettingsStore(Database(data_dir)).current()
    return None if saved == UserSettings() else saved


def figure(dash_duo, graph_id):
    return dash_duo.driver.execute_script(
        "const host = document.getElementById(arguments[0]);"
        "const gd = host && host.querySelector('.js-plotly-plot');"
        "return gd && gd.data && gd.data.length ? {"
        " data: gd.data.map(t => ({name: t.name, n: t.x.length, last: t.x[t.x.length - 1]})),"
        " shapes: (gd.layout.shapes || []).map(s => [s.y0, s.y1])} : null;",
        graph_id,
    )


def grid_rows(dash_duo, grid_id):
    return dash_duo.driver.find_elements(By.CSS_SELECTOR, f"#{grid_id} .ag-center-cols-container .ag-row")


def click(dash_duo, element):
    """Scroll `element` to the middle of the window at once, then click it. (Bootstrap scrolls
    smoothly: WebDriver's own scrolling clicks where the element was mid-animation.)"""
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", element)
    try:
        element.click()
    except ElementClickInterceptedException:  # an alert's toast over it (the simulation raises some): set aside
        dash_duo.driver.execute_script("document.querySelectorAll('.toast').forEach(t => t.style.display = 'none');")
        element.click()


def navigate(dash_duo, link_text):
    click(dash_duo, dash_duo.driver.find_element(By.LINK_TEXT, link_text))


def press(dash_duo, component_id):
    click(dash_duo, dash_duo.find_element(f"#{component_id}"))


def set_input(dash_duo, component_id, value):
    el = dash_duo.find_element(f"#{component_id}")
    el.clear()
    el.send_keys(str(value))


def test_live_page_updates_and_says_simulated(dash_duo, sim_app):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Live ticks")  # the overview is the home page
    dash_duo.wait_for_text_to_equal(f"#{ids.SOURCE_BADGE}", "Simulated data", timeout=15)
    wait_for(
        lambda: re.fullmatch(r"live · \d+\.\d s \(\d\d:\d\d:\d\dZ\)", dash_duo.find_element(f"#{ids.AGE_BADGE}").text),
        message="the age of the last tick",
    )
    dash_duo.wait_for_text_to_equal(f"#{live.CARD_TITLE[0]}", "BTCUSDT")
    first = wait_for(
        lambda: (
            re.match(r"^[\d,]+\.?\d*$", dash_duo.find_element(f"#{live.CARD_PRICE[0]}").text)
            and dash_duo.find_element(f"#{live.CARD_SUB[0]}").text
        ),
        message="a BTC price",
    )
    assert "last tick 20" in first and first.endswith("Z")
    fig = wait_for(lambda: figure(dash_duo, live.PRICE_GRAPH), message="price chart")
    assert [t["name"] for t in fig["data"]] == ["BTCUSDT", "ETHUSDT"]
    assert fig["data"][0]["n"] == 900, "the default range is 15 minutes of 1 s buckets"
    last = fig["data"][0]["last"]
    wait_for(lambda: figure(dash_duo, live.PRICE_GRAPH)["data"][0]["last"] > last, message="the chart to move on")
    assert figure(dash_duo, live.PRICE_GRAPH)["data"][0]["n"] == 900, "extendData keeps the range, not more"
    rows = wait_for(lambda: grid_rows(dash_duo, live.TICKS), message="tick rows")
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0].text)
    assert dash_duo.get_logs() == []


def test_analytics_page_shows_z_spread_and_bands(dash_duo, sim_app):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Spread & z-score")
    wait_for(
        lambda: re.match(r"^[+-]\d+\.\d{3}$", dash_duo.find_element(f"#{analytics.STAT_Z}").text), message="a z value"
    )
    spread = wait_for(lambda: figure(dash_duo, analytics.SPREAD_GRAPH), message="spread chart")
    assert [t["name"] for t in spread["data"]] == ["spread", "mean (60)"]
    z = wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), message="z chart")
    assert [2, 2] in z["shapes"] and [-2, -2] in z["shapes"]
    assert dash_duo.find_element(f"#{ids.SOURCE_BADGE}").text == "Simulated data"
    assert dash_duo.get_logs() == []


def test_threshold_saved_on_settings_moves_the_bands_on_analytics(dash_duo, sim_app, data_dir):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Settings")
    set_input(dash_duo, settings.THRESHOLD, "1.5")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Saved", timeout=10)
    assert saved_settings(data_dir).threshold == 1.5
    navigate(dash_duo, "Spread & z-score")
    z = wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), message="z chart")
    assert [1.5, 1.5] in z["shapes"] and [-1.5, -1.5] in z["shapes"]
    assert [2, 2] not in z["shapes"]
    dash_duo.wait_for_contains_text(f"#{analytics.STAT_Z_SUB}", "threshold ±1.5", timeout=5)


def test_invalid_settings_show_a_message_and_change_nothing(dash_duo, sim_app, data_dir):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Settings")
    set_input(dash_duo, settings.THRESHOLD, "-3")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Not saved: Threshold must be from 0.01 to 100")
    assert saved_settings(data_dir) is None
    set_input(dash_duo, settings.THRESHOLD, "2")
    dash_duo.find_element(f"#{settings.SYMBOL_B}").click()
    dash_duo.wait_for_element(".dash-dropdown-search").send_keys("BTC")
    option = wait_for(
        lambda: next(
            (o for o in dash_duo.driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option") if o.text == "BTCUSDT"),
            None,
        ),
        message="the BTCUSDT option",
    )
    option.click()
    dash_duo.wait_for_contains_text(f"#{settings.SYMBOL_B}", "BTCUSDT")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "must differ")
    assert saved_settings(data_dir) is None
    navigate(dash_duo, "Spread & z-score")
    set_input(dash_duo, analytics.WINDOW, "1")
    dash_duo.find_element(f"#{analytics.WINDOW_APPLY}").click()
    dash_duo.wait_for_contains_text(f"#{analytics.PARAMS_MSG}", "Window must be a whole number")
    assert saved_settings(data_dir) is None
    assert dash_duo.find_element(f"#{ids.NAV_PAIR}").text == "BTCUSDT/ETHUSDT"


@pytest.mark.slow
def test_alerts_fire_show_in_the_log_and_on_the_chart_and_clear(dash_duo, sim_app):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Settings")
    set_input(dash_duo, settings.THRESHOLD, "0.3")
    set_input(dash_duo, settings.WINDOW, "10")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Saved")
    # (an alert at the old threshold may have fired before the save: look for one at the new one)
    row = wait_for(
        lambda: next((r for r in grid_rows(dash_duo, settings.ALERT_LOG) if "|z| ≥ 0.3" in r.text), None),
        timeout=60,
        message="an alert at the new threshold",
    )
    assert "BTCUSDT/ETHUSDT" in row.text
    navigate(dash_duo, "Spread & z-score")
    wait_for(
        lambda: (figure(dash_duo, analytics.Z_GRAPH) or {"data": [{}, {"n": 0}]})["data"][1]["n"] >= 1,
        message="alert markers",
    )
    navigate(dash_duo, "Settings")
    wait_for(lambda: grid_rows(dash_duo, settings.ALERT_LOG), message="the log again")
    dash_duo.find_element(f"#{settings.CLEAR_ALERTS}").click()
    dash_duo.wait_for_contains_text(f"#{settings.CLEAR_MSG}", "cleared")


def test_export_png_downloads_a_png_named_by_pair_and_utc_time(dash_duo, sim_app):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Spread & z-score")
    wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), message="z chart")
    button = dash_duo.driver.find_element(By.CSS_SELECTOR, f"#{analytics.Z_GRAPH}").find_element(
        By.XPATH, "ancestor::div[contains(@class,'card-body')]//button[contains(.,'Export PNG')]"
    )
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)
    download = Path(dash_duo.download_path)
    files = wait_for(lambda: [p for p in download.glob("*.png")], timeout=20, message="a downloaded PNG")
    assert re.fullmatch(r"zscore_BTCUSDT-ETHUSDT_\d{8}T\d{6}Z\.png", files[0].name)
    data = wait_for(lambda: files[0].read_bytes(), message="the PNG's bytes")
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


@pytest.mark.slow
def test_four_tabs_cause_one_upstream_call_per_second(dash_duo, fake_binance, data_dir):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir)))
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    assert dash_duo.find_element(f"#{ids.SOURCE_BADGE}").text.startswith("Binance")
    driver = dash_duo.driver
    for path in ("/analytics", "/settings", "/live"):
        driver.execute_script("window.open(arguments[0], '_blank');", dash_duo.server_url + path)
    assert len(driver.window_handles) == 4
    time.sleep(3)  # every tab loaded and ticking
    start = time.time()
    time.sleep(10)
    end = time.time()
    calls = [t for t in fake_binance.times["/api/v3/ticker/price"] if start <= t < end]
    slots = int(end) - int(start) + 1
    assert 0.7 * (slots - 1) <= len(calls) <= slots, f"{len(calls)} ticker/price calls in {end - start:.1f} s"


def test_upstream_failure_shows_stale_never_live(dash_duo, fake_binance, data_dir):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir)))
    dash_duo.start_server(app)
    navigate(dash_duo, "Live ticks")
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    fake_binance.fail_next(
        "/api/v3/ticker/price", 503, {"code": -1001, "msg": "Internal error; unable to process"}, times=1_000
    )
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "STALE", timeout=20)
    dash_duo.wait_for_contains_text(f"#{ids.STATUS_BANNER}", "Binance HTTP 503", timeout=5)
    dash_duo.wait_for_contains_text(f"#{live.CARD_PRICE[0]}", "STALE", timeout=5)
    dash_duo.wait_for_contains_text(f"#{ids.LEG_BADGES}", "BTCUSDT disconnected", timeout=5)
    assert "ETHUSDT disconnected" in dash_duo.find_element(f"#{ids.LEG_BADGES}").text
    navigate(dash_duo, "Spread & z-score")
    dash_duo.wait_for_contains_text(f"#{analytics.STAT_Z_SUB}", "no fresh data", timeout=10)
    assert dash_duo.find_element(f"#{analytics.STAT_Z}").text == "–"


def test_hedge_and_timeframe_selectors_change_every_chart_and_persist(dash_duo, sim_app, data_dir):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Spread & z-score")
    wait_for(lambda: figure(dash_duo, analytics.BETA_GRAPH), message="β chart")
    Select(dash_duo.find_element(f"#{analytics.HEDGE}")).select_by_value("rolling-ols")
    dash_duo.wait_for_contains_text(f"#{analytics.PARAMS_MSG}", "Rolling OLS", timeout=10)
    dash_duo.wait_for_contains_text(f"#{analytics.STAT_BETA_SUB}", "Rolling OLS", timeout=10)
    wait_for(lambda: re.match(r"^-?\d", dash_duo.find_element(f"#{analytics.STAT_BETA}").text), message="a β value")
    next(
        lb for lb in dash_duo.driver.find_elements(By.CSS_SELECTOR, f"#{analytics.TIMEFRAME} label") if lb.text == "1m"
    ).click()
    dash_duo.wait_for_contains_text(f"#{analytics.PARAMS_MSG}", "1m bars", timeout=10)
    z = wait_for(
        lambda: (f := figure(dash_duo, analytics.Z_GRAPH)) and f["data"][0]["n"] <= 200 and f,
        message="a z chart of 1m bars",
    )
    assert z["data"][0]["last"].endswith(":00") or z["data"][0]["last"].endswith(":00.000000")
    saved = saved_settings(data_dir)
    assert (saved.hedge, saved.timeframe) == ("rolling-ols", "1m")
    dash_duo.wait_for_contains_text(f"#{analytics.STATS_PANEL}", "Half-life", timeout=15)
    assert dash_duo.get_logs() == []


def test_backtest_page_runs_and_rejects_bad_parameters(dash_duo, sim_app):
    from components.ids import Backtest as bt

    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Backtest")
    fig = wait_for(lambda: figure(dash_duo, bt.EQUITY_GRAPH), message="the equity curve")
    assert fig["data"][0]["name"] == "equity"
    set_input(dash_duo, bt.ENTRY, "1")
    dash_duo.find_element(f"#{bt.EXIT}").click()  # blur: debounced inputs apply
    wait_for(
        lambda: "/api/backtest.csv?entry=1.0" in dash_duo.find_element(f"#{bt.CSV_LINK}").get_attribute("href"),
        timeout=20,
        message="a rerun at entry 1",
    )
    rows = wait_for(lambda: grid_rows(dash_duo, bt.TRADES), timeout=20, message="trades")
    assert re.search(r"(long|short) spread", rows[0].text)
    set_input(dash_duo, bt.STOP, "0.5")
    dash_duo.find_element(f"#{bt.EXIT}").click()
    dash_duo.wait_for_contains_text(f"#{bt.MSG}", "Stop |z| must be beyond the entry", timeout=10)
    assert dash_duo.get_logs() == []


def test_rate_limit_is_explained_with_a_countdown(dash_duo, fake_binance, data_dir):
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir)))
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    fake_binance.fail_next(
        "/api/v3/ticker/price", 429, {"code": -1003, "msg": "Too many requests"}, headers={"Retry-After": "30"}
    )
    dash_duo.wait_for_contains_text(f"#{ids.STATUS_BANNER}", "Rate-limited by the exchange (HTTP 429)", timeout=10)
    dash_duo.wait_for_contains_text(f"#{ids.STATUS_BANNER}", "resuming in", timeout=5)
    calls = fake_binance.count("/api/v3/ticker/price")
    time.sleep(3)
    assert fake_binance.count("/api/v3/ticker/price") == calls, "no request inside the window"


def test_alert_rules_are_added_validated_and_removed_on_settings(dash_duo, sim_app, data_dir):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Settings")
    dash_duo.wait_for_contains_text(f"#{settings.RULES}", "|z| ≥ 2")
    Select(dash_duo.find_element(f"#{settings.RULE_KIND}")).select_by_value("price_below")
    click(dash_duo, dash_duo.find_element(f"#{settings.RULE_ADD}"))
    dash_duo.wait_for_contains_text(f"#{settings.RULE_MSG}", "Not saved: Rule level is required")
    assert saved_settings(data_dir) is None, "nothing saved"
    set_input(dash_duo, settings.RULE_LEVEL, "3500")
    Select(dash_duo.find_element(f"#{settings.RULE_LEG}")).select_by_value("B")
    set_input(dash_duo, settings.RULE_HYST, "5")
    set_input(dash_duo, settings.RULE_COOLDOWN, "60")
    click(dash_duo, dash_duo.find_element(f"#{settings.RULE_ADD}"))
    dash_duo.wait_for_contains_text(f"#{settings.RULES}", "ETHUSDT price below 3500, hysteresis 5, cooldown 60 s")
    rule = saved_settings(data_dir).rules[1]
    assert (rule.kind, rule.level, rule.leg, rule.hysteresis, rule.cooldown_s) == ("price_below", 3500, "B", 5, 60)
    click(dash_duo, dash_duo.find_element(f"#{settings.RULE_ADD}"))
    dash_duo.wait_for_contains_text(f"#{settings.RULE_MSG}", "already in the list")
    remove = dash_duo.driver.find_elements(By.CSS_SELECTOR, f"#{settings.RULES} button")
    click(dash_duo, remove[0])
    wait_for(lambda: "|z|" not in dash_duo.find_element(f"#{settings.RULES}").text, message="the |z| rule removed")
    assert [r.kind for r in saved_settings(data_dir).rules] == ["price_below"]
    assert dash_duo.get_logs() == []


def test_test_alert_toasts_on_every_open_page_notifies_and_reaches_the_webhook(dash_duo, data_dir, httpserver):
    port = free_port()  # the app knows its own address: a webhook to it is refused
    config = AppConfig(source="sim", data_dir=str(data_dir), history_s=3_600, port=port, allow_private_webhooks=True)
    sim_app = create_app(config)
    received = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda r: (received.append(json.loads(r.data)), Response("ok"))[1]
    )
    dash_duo.start_server(sim_app, port=port)
    driver = dash_duo.driver
    driver.execute_script("window.open(arguments[0], '_blank');", dash_duo.server_url + "/analytics")
    first, second = driver.window_handles
    driver.switch_to.window(second)
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    driver.execute_script(  # a Notification API that records (headless Chromium shows none), permission granted
        "window.__notes = []; window.__asked = 0;"
        "window.Notification = function (title, opts) { window.__notes.push(title + ' | ' + opts.body); };"
        "window.Notification.permission = 'default';"
        "window.Notification.requestPermission = function () { window.__asked += 1;"
        "  window.Notification.permission = 'granted'; return Promise.resolve('granted'); };"
    )
    click(dash_duo, dash_duo.find_element(f"#{ids.NOTIFY}"))
    driver.switch_to.window(first)
    navigate(dash_duo, "Settings")
    for bad, why in [
        ("ftp://example.com/hook", "must be an http:// or https:// address"),
        ("javascript:alert(1)", "must be an http:// or https:// address"),
        ("http://169.254.169.254/latest/meta-data/", "Not saved: Webhook URL refused: 169.254.169.254 is a link-local"),
        (f"{dash_duo.server_url}/api/alerts/test", "is this app"),
    ]:
        set_input(dash_duo, settings.WEBHOOK, bad)
        click(dash_duo, dash_duo.find_element(f"#{settings.WEBHOOK_SAVE}"))
        dash_duo.wait_for_contains_text(f"#{settings.WEBHOOK_MSG}", why)
    assert saved_settings(data_dir) is None
    set_input(dash_duo, settings.WEBHOOK, httpserver.url_for("/hook"))
    click(dash_duo, dash_duo.find_element(f"#{settings.WEBHOOK_SAVE}"))
    dash_duo.wait_for_contains_text(f"#{settings.WEBHOOK_MSG}", "will be POSTed")
    click(dash_duo, dash_duo.find_element(f"#{settings.TEST_ALERT}"))
    dash_duo.wait_for_contains_text(f"#{settings.TEST_MSG}", "sent to the webhook and every open page")
    click(dash_duo, dash_duo.find_element(f"#{settings.TEST_ALERT}"))
    dash_duo.wait_for_contains_text(f"#{settings.TEST_MSG}", "Not sent: A test alert was sent less than 5 s ago")
    dash_duo.wait_for_contains_text(f"#{ids.TOASTS}", "Test alert", timeout=10)
    dash_duo.wait_for_contains_text(f"#{settings.WEBHOOK_STATUS}", "Last webhook delivery OK", timeout=15)
    assert received and received[0]["test"] is True and received[0]["pair"] == "BTCUSDT/ETHUSDT"
    driver.switch_to.window(second)
    dash_duo.wait_for_contains_text(f"#{ids.TOASTS}", "Test alert", timeout=10)
    wait_for(
        lambda: [
            n for n in driver.execute_script("return window.__notes") if n.startswith("BTCUSDT/ETHUSDT: Test alert")
        ],
        message="a desktop notification",
    )
    assert driver.execute_script("return window.__asked") == 1, "permission asked once, when switched on"
    driver.refresh()
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    assert dash_duo.find_element(f"#{ids.NOTIFY}").is_selected(), "the opt-in is remembered by the browser"
    assert "Test alert" not in dash_duo.find_element(f"#{ids.TOASTS}").text, "a reopened page replays no old alert"


def test_restricted_location_is_explained_and_the_host_switched_in_one_click(dash_duo, fake_binance, data_dir):
    from services.binance import MARKET_DATA_URL

    fake_binance.fail_next(
        "/api/v3/ticker/price",
        451,
        {"code": 0, "msg": "Service unavailable from a restricted location according to 'b. Eligibility'"},
        times=10_000,
    )
    app = create_app(
        AppConfig(source="binance", binance_url=fake_binance.url, fallback_urls=(), data_dir=str(data_dir))
    )
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text(f"#{ids.STATUS_BANNER}", "451", timeout=20)
    navigate(dash_duo, "Settings")
    dash_duo.wait_for_contains_text(f"#{settings.HOST_INFO}", "HTTP 451 — restricted location", timeout=10)
    button = next(
        b for b in dash_duo.driver.find_elements(By.CSS_SELECTOR, "button") if "data-api.binance.vision" in b.text
    )
    click(dash_duo, button)
    dash_duo.wait_for_contains_text(f"#{settings.HOST_MSG}", f"Switched to {MARKET_DATA_URL}")
    dash_duo.wait_for_contains_text(f"#{settings.HOST_INFO}", MARKET_DATA_URL, timeout=10)
    assert saved_settings(data_dir).binance_url == MARKET_DATA_URL


PLOTTED = (
    "const gd = document.getElementById(arguments[0]).querySelector('.js-plotly-plot');"
    "return gd && gd.data ? gd.data.map(t => ({x: Array.from(t.x || []), y: Array.from(t.y || [])})) : null;"
)


def plotted(driver, graph_id, trace):
    """A trace as the page holds it: {x: [...], y: [...]} as a Series indexed by the UTC second."""
    data = driver.execute_script(PLOTTED, graph_id)
    return pd.Series(data[trace]["y"], index=[x[:19] for x in data[trace]["x"]], dtype=float)


@pytest.mark.slow
def test_every_plotted_closed_bar_equals_the_csv_after_a_minute_of_late_ticks(dash_duo, fake_binance, data_dir):
    """The chart is the truth: after a minute of live updates, with ticks that land after their
    bar was drawn and two more busy tabs, every closed bar on the price, spread, mean, z and β
    charts equals /api/analytics.csv for that bar, and the analysis never restarted."""
    import io
    import threading

    import requests

    from services.sources import Tick, utc_from_epoch

    SettingsStore(Database(data_dir)).save(validate({"hedge": "rolling-ols", "window": 30, **DEFAULTS}))
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir)))
    market = app.server.extensions["market"]
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    navigate(dash_duo, "Live ticks")
    driver = dash_duo.driver
    for _ in range(3):  # the analytics tab we read, and two more busy ones
        driver.execute_script("window.open(arguments[0], '_blank');", dash_duo.server_url + "/analytics")
    live_tab, analytics_tab = driver.window_handles[:2]
    stop = threading.Event()
    late = []

    def late_ticks():
        """A trade for the second that just closed lands now: after its bar was first drawn."""
        while not stop.wait(0.7):
            second = int(time.time()) - 1
            price = fake_binance.price("ETHUSDT", second) * 1.0003
            market.store.add_ticks([Tick("ETHUSDT", price, utc_from_epoch(second + 0.999))])
            late.append(second)

    injector = threading.Thread(target=late_ticks, daemon=True)
    injector.start()
    time.sleep(3)
    restarts = market.analyses.engine(market.snapshot().params).resets
    time.sleep(60)
    stop.set()
    injector.join()
    driver.switch_to.window(analytics_tab)
    charts = {
        "spread": plotted(driver, analytics.SPREAD_GRAPH, 0),
        "mean": plotted(driver, analytics.SPREAD_GRAPH, 1),
        "zscore": plotted(driver, analytics.Z_GRAPH, 0),
        "beta": plotted(driver, analytics.BETA_GRAPH, 0),
    }
    driver.switch_to.window(live_tab)
    charts["BTCUSDT"] = plotted(driver, live.PRICE_GRAPH, 0)
    charts["ETHUSDT"] = plotted(driver, live.PRICE_GRAPH, 1)
    csv = pd.read_csv(
        io.StringIO(requests.get(dash_duo.server_url + "/api/analytics.csv?seconds=900", timeout=10).text)
    )
    csv.index = csv["timestamp_utc"].str[:19]
    assert market.analyses.engine(market.snapshot().params).resets == restarts, "late ticks never restart"
    assert len(late) >= 60
    for column, series in charts.items():
        last = pd.Timestamp(series.index[-1])
        closed = series[[pd.Timestamp(x) <= last - pd.Timedelta(seconds=3) for x in series.index]]
        both = closed.index.intersection(csv.index)
        assert len(both) >= 850, f"{column}: only {len(both)} closed bars to compare"
        chart, api = closed.loc[both].to_numpy(), csv.loc[both, column].to_numpy(dtype=float)
        bad = ~np.isclose(chart, api, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert not bad.any(), (
            f"{column}: {bad.sum()} bars differ, e.g. {both[bad][:3].tolist()}: "
            f"{chart[bad][:3]} on the chart, {api[bad][:3]} in the CSV"
        )
    eth = charts["ETHUSDT"]
    drawn_late = {f"{pd.Timestamp(s, unit='s'):%Y-%m-%dT%H:%M:%S}": s for s in late}
    hits = [x for x in drawn_late if x in eth.index[:-3]]
    assert len(hits) >= 40 and all(
        np.isclose(eth[x], fake_binance.price("ETHUSDT", drawn_late[x]) * 1.0003, rtol=1e-12) for x in hits
    ), "each late trade is what the chart shows for its second"
    assert dash_duo.get_logs() == []


def test_a_long_range_is_downsampled_and_zooming_in_redraws_it_at_full_resolution(dash_duo, sim_app):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Spread & z-score")
    wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), message="z chart")
    label = next(lb for lb in dash_duo.driver.find_elements(By.CSS_SELECTOR, ".range-picker label") if lb.text == "1h")
    click(dash_duo, label)

    def downsampled():
        z = plotted(dash_duo.driver, analytics.Z_GRAPH, 0)
        return [z] if (pd.Timestamp(z.index[-1]) - pd.Timestamp(z.index[0])).total_seconds() >= 3_500 else None

    [coarse] = wait_for(downsampled, message="the 1 h range")
    span = (pd.Timestamp(coarse.index[-1]) - pd.Timestamp(coarse.index[0])).total_seconds()
    # drawn whole with at most 2,000 points; each tick's tail then adds its bar at full resolution
    # (until the 5-minute redraw): a read a few seconds later may see those few more
    assert span >= 3_500 and len(coarse) <= 2_000 + 30, f"{len(coarse)} points over {span:.0f} s"
    end = pd.Timestamp(coarse.index[-1])
    x0, x1 = end - pd.Timedelta(seconds=600), end - pd.Timedelta(seconds=300)
    dash_duo.driver.execute_script(
        "const gd = document.getElementById(arguments[0]).querySelector('.js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': [arguments[1], arguments[2]]});",
        analytics.Z_GRAPH,
        str(x0),
        str(x1),
    )

    def exact():
        z = plotted(dash_duo.driver, analytics.Z_GRAPH, 0)
        seconds = {pd.Timestamp(x) for x in z.index if x0 <= pd.Timestamp(x) <= x1}
        return len(seconds) == 301

    wait_for(exact, message="every second of the zoomed window")
    dash_duo.driver.execute_script(
        "const gd = document.getElementById(arguments[0]).querySelector('.js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.autorange': true});",
        analytics.Z_GRAPH,
    )
    wait_for(lambda: len(plotted(dash_duo.driver, analytics.Z_GRAPH, 0)) <= 2_005, message="back to the overview")
    assert dash_duo.get_logs() == []


def test_a_page_that_renders_after_its_first_ticks_still_gets_whole_charts(dash_duo, sim_app, monkeypatch):
    """Ticks that land before the page's components exist must not count as applied: the
    cursor is what the browser applied, so the charts still come whole."""
    import dash

    page = next(p for p in dash.page_registry.values() if p["path"] == "/analytics")
    layout = page["layout"]
    monkeypatch.setitem(page, "layout", lambda **kw: (time.sleep(2.5), layout(**kw))[1])
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Spread & z-score")
    z = wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), timeout=15, message="the z chart")
    assert z["data"][0]["n"] == 900, "the whole 15 minutes"
    last = z["data"][0]["last"]
    wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH)["data"][0]["last"] > last, message="tails after it")
    assert dash_duo.get_logs() == []


@pytest.fixture
def book_app(data_dir):
    pairs = (("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "BNBUSDT"), ("XRPUSDT", "ADAUSDT"))
    return create_app(AppConfig(source="sim", data_dir=str(data_dir), history_s=3_600, pairs=pairs))


def book_rows(dash_duo):
    """The overview's rows as {pair, z, adf, state}, in the order shown."""
    return dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#" + ids.Overview.ROWS + " a.book-row')).map(r => {"
        " const v = Array.from(r.querySelectorAll('.book-value')).map(c => c.innerText.trim());"
        " return {href: r.getAttribute('href'), pair: v[0].split(' ')[0], z: v[2], adf: v[6], state: v[7]}; });"
    )


def test_the_overview_shows_every_pair_as_the_api_does_sorts_by_z_and_opens_a_pair(dash_duo, book_app):
    dash_duo.start_server(book_app)
    rows = wait_for(lambda: (r := book_rows(dash_duo)) and all(x["z"] != "–" for x in r) and r, message="3 rows")
    assert [r["pair"] for r in rows] == ["BTCUSDT/ETHUSDT", "SOLUSDT/BNBUSDT", "XRPUSDT/ADAUSDT"]
    assert dash_duo.find_element(f"#{ids.Overview.COUNT}").text == "Watchlist · 3 pairs"
    api = {r["pair"]: r for r in requests.get(dash_duo.server_url + "/api/pairs", timeout=10).json()}
    for row in rows:
        name = row["pair"].replace("/", "-")
        assert row["href"] == f"/analytics?pair={name}" and row["state"] == api[name]["state"] == "live"
        # z moves every second; the ADF p-value is recomputed every 30 s: read within that
        assert row["adf"] == format(api[name]["adf_pvalue"], ".3f") or time.time() % 30 < 2
        assert re.fullmatch(r"[+-]\d+\.\d\d", row["z"])
    dash_duo.driver.find_element(By.XPATH, "//label[normalize-space()='|z|']").click()

    def by_z():
        shown = book_rows(dash_duo)
        z = [abs(float(r["z"])) for r in shown]
        return shown if z == sorted(z, reverse=True) and len(shown) == 3 else None

    wait_for(by_z, message="rows sorted by |z|")
    dash_duo.driver.find_element(By.XPATH, "//a[contains(@href,'pair=SOLUSDT-BNBUSDT')]").click()
    dash_duo.wait_for_text_to_equal(f"#{ids.NAV_PAIR}", "SOLUSDT/BNBUSDT", timeout=10)
    assert dash_duo.driver.current_url.endswith("/analytics?pair=SOLUSDT-BNBUSDT")
    wait_for(lambda: figure(dash_duo, analytics.Z_GRAPH), message="the pair's z chart")
    assert "SOLUSDT" in dash_duo.find_element(f"#{analytics.SPREAD_GRAPH}").text
    live_link = dash_duo.driver.find_element(By.LINK_TEXT, "Live ticks")
    assert live_link.get_attribute("href").endswith("/live?pair=SOLUSDT-BNBUSDT"), "the pair goes along"
    live_link.click()
    dash_duo.wait_for_text_to_equal(f"#{live.CARD_TITLE[0]}", "SOLUSDT", timeout=10)
    dash_duo.driver.back()
    dash_duo.wait_for_text_to_equal(f"#{ids.NAV_PAIR}", "SOLUSDT/BNBUSDT", timeout=10)
    assert "/analytics?pair=SOLUSDT-BNBUSDT" in dash_duo.driver.current_url
    assert dash_duo.get_logs() == []


def test_a_pair_not_in_the_watchlist_is_said_and_the_first_shown(dash_duo, book_app):
    dash_duo.start_server(book_app)
    dash_duo.driver.get(dash_duo.server_url + "/analytics?pair=DOGEUSDT-ETHUSDT")
    dash_duo.wait_for_contains_text(f"#{ids.STATUS_BANNER}", "DOGEUSDT-ETHUSDT is not in the watchlist", timeout=10)
    assert dash_duo.find_element(f"#{ids.NAV_PAIR}").text == "BTCUSDT/ETHUSDT"


def test_settings_adds_edits_and_removes_watched_pairs(dash_duo, sim_app, data_dir):
    dash_duo.start_server(sim_app)
    navigate(dash_duo, "Settings")
    dash_duo.select_dcc_dropdown(f"#{settings.PAIR_ADD_A}", value="SOLUSDT")
    dash_duo.select_dcc_dropdown(f"#{settings.PAIR_ADD_B}", value="ETHUSDT")
    dash_duo.find_element(f"#{settings.PAIR_ADD}").click()
    dash_duo.wait_for_contains_text(f"#{settings.PAIR_MSG}", "Watching SOLUSDT/ETHUSDT", timeout=10)
    dash_duo.find_element(f"#{settings.PAIR_ADD}").click()  # the same pair again
    dash_duo.wait_for_contains_text(f"#{settings.PAIR_MSG}", "already in the watchlist", timeout=10)
    dash_duo.driver.find_element(By.LINK_TEXT, "SOLUSDT/ETHUSDT").click()  # edit it
    dash_duo.wait_for_contains_text(f"#{settings.WATCHLIST}", "SOLUSDT/ETHUSDT (editing)", timeout=10)
    set_input(dash_duo, settings.THRESHOLD, "2.7")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Saved: SOLUSDT/ETHUSDT, θ = 2.7", timeout=10)
    book = {"-".join(s.pair): s for s in SettingsStore(Database(data_dir)).watchlist()}
    assert book["SOLUSDT-ETHUSDT"].threshold == 2.7 and book["BTCUSDT-ETHUSDT"].threshold == 2.0, "its own θ"
    buttons = dash_duo.driver.find_elements(By.XPATH, f"//div[@id='{settings.WATCHLIST}']//button[.='Remove']")
    click(dash_duo, buttons[1])
    dash_duo.wait_for_contains_text(f"#{settings.PAIR_MSG}", "Removed SOLUSDT/ETHUSDT", timeout=10)
    assert [s.pair for s in SettingsStore(Database(data_dir)).watchlist()] == [("BTCUSDT", "ETHUSDT")]
    assert dash_duo.driver.find_element(By.XPATH, f"//div[@id='{settings.WATCHLIST}']//button").get_attribute(
        "disabled"
    ), "the last pair can't be removed"


def scan_then_cancel(dash_duo, fake_binance):
    """On the Scanner page: a 1 h scan of the top 4 symbols on a slow exchange, its progress
    watched, then cancelled: nothing shown, and Scan can be pressed again."""
    navigate(dash_duo, "Scanner")
    dash_duo.wait_for_element(f"#{scanner.TIMEFRAME}", timeout=15)
    dash_duo.driver.find_element(By.XPATH, f"//div[@id='{scanner.TIMEFRAME}']//label[.='1h']").click()
    set_input(dash_duo, scanner.TOP, 4)
    dash_duo.wait_for_contains_text(f"#{scanner.BUDGET}", "Request weight about 108", timeout=10)

    fake_binance.delay_next("/api/v3/klines", 1.5, times=3)  # a slow exchange: time to watch and cancel
    press(dash_duo, scanner.SCAN)
    wait_for(lambda: "Fetching 1h klines" in dash_duo.find_element(f"#{scanner.PROGRESS}").text, message="progress")
    assert dash_duo.find_element(f"#{scanner.SCAN}").get_attribute("disabled"), "one scan at a time per tab"
    press(dash_duo, scanner.CANCEL)
    dash_duo.wait_for_contains_text(f"#{scanner.MSG}", "Scan cancelled", timeout=10)
    wait_for(lambda: not dash_duo.find_element(f"#{scanner.SCAN}").get_attribute("disabled"), message="Scan again")
    assert "d-none" in dash_duo.find_element(f"#{scanner.PROGRESS_ROW}").get_attribute("class")
    assert grid_rows(dash_duo, scanner.RESULTS) == [], "a cancelled scan shows no result"


def scan_to_the_end(dash_duo):
    """Scan (the controls as scan_then_cancel left them): the table of the 6 pairs, the
    cointegrated one first."""
    press(dash_duo, scanner.SCAN)
    dash_duo.wait_for_contains_text(f"#{scanner.SUMMARY}", "4 symbols, 6 of 6 pairs tested", timeout=30)
    rows = wait_for(lambda: grid_rows(dash_duo, scanner.RESULTS), message="result rows")
    assert len(rows) == 6 and "COINAUSDT-COINBUSDT" in rows[0].text and "cointegrated" in rows[0].text
    return rows


def test_a_scan_shows_its_progress_can_be_cancelled_and_adds_a_pair_to_the_watchlist(dash_duo, fake_binance, data_dir):
    fake_binance.add_scan_universe()
    app = create_app(AppConfig(source="binance", binance_url=fake_binance.url, data_dir=str(data_dir)))
    dash_duo.start_server(app)
    scan_then_cancel(dash_duo, fake_binance)
    rows = scan_to_the_end(dash_duo)  # the killed scan left the slot: this one runs
    click(dash_duo, rows[0].find_element(By.CSS_SELECTOR, "button.scan-add"))
    dash_duo.wait_for_contains_text(f"#{scanner.ADD_MSG}", "Added COINAUSDT/COINBUSDT to the watchlist", timeout=10)
    added = SettingsStore(Database(data_dir)).for_pair(("COINAUSDT", "COINBUSDT"))
    assert added.pair == ("COINAUSDT", "COINBUSDT") and added.log_prices, "as scanned: a on b, log prices"
    click(dash_duo, grid_rows(dash_duo, scanner.RESULTS)[0].find_element(By.CSS_SELECTOR, "button.scan-add"))
    dash_duo.wait_for_contains_text(f"#{scanner.ADD_MSG}", "already in the watchlist", timeout=10)
    assert not dash_duo.driver.find_elements(By.LINK_TEXT, "Open it"), "the reason replaced the link"
    assert dash_duo.get_logs() == []


def test_streamed_prices_are_pushed_to_the_live_cards_between_ticks_and_never_go_back(
    dash_duo, fake_binance, fake_stream, tape, data_dir
):
    config = AppConfig(
        source="stream", binance_url=fake_binance.url, stream_url=fake_stream.url, data_dir=str(data_dir)
    )
    app = create_app(config)
    dash_duo.start_server(app)
    navigate(dash_duo, "Live ticks")
    dash_duo.wait_for_contains_text(f"#{ids.SOURCE_BADGE}", "Binance stream", timeout=20)
    dash_duo.wait_for_contains_text(f"#{live.CARD_SUB[0]}", "last tick", timeout=10)
    dash_duo.driver.execute_script(  # every change of the BTCUSDT card: its price and the trade time it names
        "const price = document.getElementById(arguments[0]), sub = document.getElementById(arguments[1]);"
        "window.__shown = [];"
        "new MutationObserver(() => window.__shown.push([price.textContent, sub.textContent]))"
        "    .observe(sub, {childList: true, characterData: true, subtree: true});",
        live.CARD_PRICE[0],
        live.CARD_SUB[0],
    )
    time.sleep(3)
    shown = dash_duo.driver.execute_script("return window.__shown")
    stamps = [pd.Timestamp(sub.rsplit("last tick ", 1)[1]) for _, sub in shown]
    assert len(set(stamps)) >= 12, f"{len(set(stamps))} trades shown in 3 s: pushed, not once a tick"
    assert stamps == sorted(stamps), "a tick never puts back an older price than the push showed"
    for (price, _), stamp in zip(shown, stamps):
        assert float(price.replace(",", "")) == tape.last("BTCUSDT", round(stamp.timestamp() * 1000))
    assert dash_duo.get_logs() == []
    app.server.extensions["market"].relay.stop()  # before the test server's threads are stopped


def test_sign_in_a_viewer_is_refused_a_change_signs_out_and_an_editor_saves(dash_duo, data_dir, tmp_path):
    users = tmp_path / "users"
    lines = [
        f"user {name} {role} {generate_password_hash(name + '-password')}"
        for name, role in (("vi", "viewer"), ("ed", "editor"))
    ]
    users.write_text("\n".join(lines) + "\n")
    app = create_app(AppConfig(source="sim", data_dir=str(data_dir), history_s=3_600, users_file=str(users)))
    dash_duo.start_server(app, navigate=False)
    driver = dash_duo.driver

    def sign_in(name, password):
        wait_for(lambda: "/login" in driver.current_url, message="the sign-in page")
        dash_duo.wait_for_element("#name").send_keys(name)
        dash_duo.find_element("#password").send_keys(password)
        dash_duo.find_element("button[type=submit]").click()

    driver.get(dash_duo.server.url + "/settings")  # a page asked for: sign in first, then that page
    sign_in("vi", "wrong-password")
    dash_duo.wait_for_contains_text(".alert-danger", "Wrong name or password")
    dash_duo.find_element("#name").clear()
    sign_in("vi", "vi-password")
    dash_duo.wait_for_element(f"#{settings.THRESHOLD}", timeout=15)
    assert driver.current_url.endswith("/settings")
    set_input(dash_duo, settings.THRESHOLD, "1.5")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Only editors can change this; vi is a viewer", timeout=10)
    assert saved_settings(data_dir) is None
    navigate(dash_duo, "Sign out")
    sign_in("ed", "ed-password")
    dash_duo.wait_for_element(f"#{ids.NAV_PAIR}", timeout=15)
    navigate(dash_duo, "Settings")
    set_input(dash_duo, settings.THRESHOLD, "1.5")
    press(dash_duo, settings.SAVE)
    dash_duo.wait_for_contains_text(f"#{settings.SAVE_MSG}", "Saved", timeout=10)
    assert saved_settings(data_dir).threshold == 1.5
