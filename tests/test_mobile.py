"""On a phone (390 × 844, emulated in headless Chromium): every page is usable. The navbar is one
line with its menu behind a toggler, the source and freshness stay in view, nothing runs off the
right edge, charts fill the width with no mode bar over them."""

import pytest
from selenium.webdriver.common.by import By

from app import create_app
from components import ids
from services.settings import AppConfig

PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}
PAGES = ("/", "/live", "/analytics", "/backtest", "/scanner", "/settings")


def on_a_phone(dash_duo):
    dash_duo.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)


def overflow(dash_duo) -> list[str]:
    """Elements whose right edge is past the screen's, outside anything that scrolls on its own
    (a table's columns may scroll inside the table)."""
    return dash_duo.driver.execute_script(
        """
        const scrolls = el => { for (let p = el.parentElement; p; p = p.parentElement) {
            const s = getComputedStyle(p); if (/(auto|scroll|hidden)/.test(s.overflowX)) return true; }
            return false; };
        const out = [];
        for (const el of document.querySelectorAll('body *')) {
            const r = el.getBoundingClientRect();
            if (r.width > 0 && r.right > window.innerWidth + 1 && !scrolls(el))
                out.push(el.tagName + '#' + el.id + '.' + String(el.className).slice(0, 40));
        }
        return out;"""
    )


@pytest.fixture
def phone_app(tmp_path):
    return create_app(AppConfig(source="sim", data_dir=str(tmp_path / "data"), history_s=3_600))


def test_every_page_fits_a_phone_with_a_one_line_navbar_and_a_menu(dash_duo, phone_app):
    dash_duo.start_server(phone_app)
    on_a_phone(dash_duo)
    driver = dash_duo.driver
    for path in PAGES:
        driver.get(dash_duo.server_url + path)
        dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
        assert driver.execute_script("return window.innerWidth") == 390
        nav = driver.find_element(By.CSS_SELECTOR, "nav.navbar").rect
        assert nav["height"] <= 64, f"{path}: the navbar takes {nav['height']} px"
        source, age = dash_duo.find_element(f"#{ids.SOURCE_BADGE}"), dash_duo.find_element(f"#{ids.AGE_BADGE}")
        assert source.text == "Simulated data" and source.is_displayed(), "the simulation is always labelled"
        assert abs(source.rect["y"] - age.rect["y"]) < 4 and age.rect["height"] < 30, "badges on one line"
        links = driver.find_elements(By.CSS_SELECTOR, "#nav-collapse a.nav-link")
        assert len(links) == len(PAGES) and not any(a.is_displayed() for a in links), "links behind the toggler"
        assert overflow(dash_duo) == [], f"{path}: past the right edge"
        for graph in driver.find_elements(By.CSS_SELECTOR, ".chart-card .js-plotly-plot"):
            box = graph.rect
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{path}: a chart wider than the screen"
            modebars = graph.find_elements(By.CSS_SELECTOR, ".modebar-container")
            assert all(not m.is_displayed() for m in modebars), "no mode bar over the chart (Export PNG stays)"
        for label in driver.find_elements(By.CSS_SELECTOR, ".range-picker label"):
            assert label.rect["x"] + label.rect["width"] <= 390, f"{path}: a range button off the edge"


def test_the_menu_opens_navigates_and_closes(dash_duo, phone_app):
    dash_duo.start_server(phone_app)
    on_a_phone(dash_duo)
    driver = dash_duo.driver
    driver.get(dash_duo.server_url + "/")
    dash_duo.wait_for_contains_text(f"#{ids.AGE_BADGE}", "live", timeout=20)
    toggler = dash_duo.find_element(f"#{ids.NAV_TOGGLER}")
    assert toggler.is_displayed()
    toggler.click()
    dash_duo.wait_for_element_by_css_selector(f"#{ids.NAV_COLLAPSE}.show")
    link = driver.find_element(By.LINK_TEXT, "Spread & z-score")
    assert link.is_displayed()
    assert dash_duo.find_element(f"#{ids.NAV_PAIR}").text == "BTCUSDT/ETHUSDT", "the pair is in the menu"
    link.click()
    dash_duo.wait_for_element_by_css_selector("#an-z-graph .js-plotly-plot", timeout=20)
    dash_duo.wait_for_no_elements(f"#{ids.NAV_COLLAPSE}.show", timeout=5)
    assert overflow(dash_duo) == []
    assert dash_duo.get_logs() == []


def test_the_overview_is_a_card_per_pair_on_a_phone(dash_duo, tmp_path):
    pairs = (("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "BNBUSDT"))
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path / "data"), history_s=3_600, pairs=pairs))
    dash_duo.start_server(app)
    on_a_phone(dash_duo)
    driver = dash_duo.driver
    driver.get(dash_duo.server_url + "/")
    dash_duo.wait_for_contains_text(f"#{ids.Overview.ROWS}", "SOLUSDT/BNBUSDT", timeout=20)
    assert not driver.find_element(By.CSS_SELECTOR, ".book-header").is_displayed(), "no table header"
    cards = driver.find_elements(By.CSS_SELECTOR, "a.book-row")
    assert len(cards) == 2
    for card in cards:
        box = card.rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] > 150, "a card, in the screen"
        labels = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".book-label") if e.is_displayed()]
        assert {"z", "Spread", "ADF p", "State", "Alerts today"} <= set(labels), "each figure says what it is"
    assert overflow(dash_duo) == []
