"""The webhook cannot be turned on the app (a loop) or on the network behind it (SSRF)."""

import ipaddress
import threading
import time

import pytest
import requests
from cachelib import SimpleCache
from werkzeug import Response
from werkzeug.serving import make_server

from app import create_app
from loopback import free_port
from services import netguard
from services.alerting import TooSoonForTestAlert
from services.alerts import Alert, AlertLog
from services.db import Database
from services.market import MarketService
from services.netguard import TargetRefused, WebhookPolicy
from services.settings import AppConfig

PUBLIC = "http://93.184.216.34/hook"  # a literal public address: checked without DNS, never contacted

INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://127.0.0.1:6379/",
    "http://localhost:5432/",
    "http://[::1]:8080/",
    "http://0x7f000001/",  # 127.0.0.1 in hex
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.1.2.3/",
    "http://192.168.0.10/",
    "http://172.16.5.5/",
    "http://[fd00::1]/",
    "http://224.0.0.1/",  # multicast
    "http://0.0.0.0/",
    "http://240.0.0.1/",  # reserved
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_targets_are_refused_in_every_notation(url):
    with pytest.raises(TargetRefused, match=r"refused|does not resolve"):
        WebhookPolicy().check(url)


def test_a_public_target_passes_and_credentials_in_the_url_do_not():
    assert WebhookPolicy().check(PUBLIC) == PUBLIC
    with pytest.raises(TargetRefused, match="user name or password"):
        WebhookPolicy().check("http://user:pw@93.184.216.34/hook")


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("http://10.1.2.3/hook", True),
        ("http://127.0.0.1:9999/hook", True),
        ("http://127.0.0.1:8050/api/alerts/test", False),  # the app itself
        ("http://localhost:8050/", False),
        ("http://169.254.169.254/", False),  # link-local stays refused
        ("http://224.0.0.1/", False),
    ],
)
def test_allow_private_admits_a_trusted_network_but_never_the_app_or_link_local(url, allowed):
    policy = WebhookPolicy(allow_private=True, own_host="127.0.0.1", own_port=8050)
    if allowed:
        assert policy.check(url) == url
    else:
        with pytest.raises(TargetRefused):
            policy.check(url)


def market(tmp_path, **config) -> MarketService:
    return MarketService(AppConfig(source="sim", data_dir=str(tmp_path), history_s=600, **config), SimpleCache())


def test_saving_an_internal_webhook_is_refused_and_nothing_is_saved(tmp_path):
    m = market(tmp_path)
    for url in INTERNAL[:4]:
        with pytest.raises(TargetRefused):
            m.save_settings({"webhook_url": url})
    assert m.current_settings().webhook_url == ""
    assert m.save_settings({"webhook_url": PUBLIC}).webhook_url == PUBLIC


def test_a_dns_answer_that_changes_after_the_check_is_refused_at_connect_time(tmp_path, httpserver, monkeypatch):
    """DNS rebinding: the name resolved to a public address when checked, and to loopback when
    the connection is made. The socket's peer address is checked too."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    m = market(tmp_path)
    url = httpserver.url_for("/hook")
    monkeypatch.setattr(netguard, "_resolve", lambda host, port: [ipaddress.ip_address("93.184.216.34")])
    m.save_settings({"webhook_url": url})
    alert = m.send_test_alert()
    assert m.notifier.wait_idle()
    status = m.notifier.status()
    assert status["ok"] is False and "refused" in status["detail"] and status["alert_id"] == alert.id
    assert httpserver.log == [], "nothing reached the loopback receiver"


def test_redirects_are_not_followed(tmp_path, httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        Response(status=307, headers={"Location": httpserver.url_for("/internal")})
    )
    httpserver.expect_request("/internal").respond_with_data("reached")
    m = market(tmp_path, allow_private_webhooks=True)
    m.save_settings({"webhook_url": httpserver.url_for("/hook")})
    m.send_test_alert()
    assert m.notifier.wait_idle()
    assert "redirects are not followed" in m.notifier.status()["detail"]
    assert [r.path for r, _ in httpserver.log] == ["/hook"]


def test_test_alerts_are_rate_limited_and_never_evict_real_alerts(tmp_path):
    m = market(tmp_path)
    m.send_test_alert()
    with pytest.raises(TooSoonForTestAlert, match=r"try again in [1-5] s"):
        m.send_test_alert()
    log = AlertLog(Database(tmp_path / "cap"), max_rows=5, max_test_rows=2, prune_every=1)
    real = [Alert(1_000 + i, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", 2.5, 2.0) for i in range(5)]
    log.add(real)
    for i in range(30):
        log.add([Alert(2_000 + i, "Test alert", f"test:{i}", "test", "A/B", 0.0, 2.0)])
    kept = log.log()
    assert sorted(a.second for a in kept if not a.is_test) == [a.second for a in real], "every real alert kept"
    assert [a.rule_key for a in kept if a.is_test] == ["test:29", "test:28"]
    log.add([Alert(3_000, "|z| ≥ 2", "abs_z:θ::0:0", "abs_z", "A/B", 2.5, 2.0)])
    assert sorted(a.second for a in log.log() if not a.is_test) == [1_001, 1_002, 1_003, 1_004, 3_000]


def test_the_test_alert_route_answers_429_when_too_soon(tmp_path):
    client = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=600)).server.test_client()
    assert client.post("/api/alerts/test").status_code == 201
    again = client.post("/api/alerts/test")
    assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 5
    assert "try again" in again.get_json()["error"]


class Served:
    """An app on a loopback port, in this process (so its alert log can be read directly)."""

    def __init__(self, tmp_path, name):
        self.port = free_port()
        config = AppConfig(
            source="sim", data_dir=str(tmp_path / name), history_s=600, port=self.port, allow_private_webhooks=True
        )
        self.app = create_app(config)
        self.market = self.app.server.extensions["market"]
        self.server = make_server("127.0.0.1", self.port, self.app.server, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"


def test_two_apps_whose_webhooks_point_at_each_other_do_not_loop(tmp_path):
    """Before: a webhook on the app's own test-alert route made ~165 alerts a second. An alert
    caused by a delivery is refused now, and the app's own address cannot be saved at all."""
    a, b = Served(tmp_path, "a"), Served(tmp_path, "b")
    try:
        with pytest.raises(TargetRefused, match="is this app"):
            a.market.save_settings({"webhook_url": f"{a.url}/api/alerts/test"})
        a.market.save_settings({"webhook_url": f"{b.url}/api/alerts/test"})
        b.market.save_settings({"webhook_url": f"{a.url}/api/alerts/test"})
        assert requests.post(f"{a.url}/api/alerts/test", timeout=5).status_code == 201
        assert a.market.notifier.wait_idle()
        time.sleep(1.5)
        assert len(a.market.alerts.log()) == 1 and len(b.market.alerts.log()) == 0
        status = a.market.notifier.status()
        assert status["ok"] is False and "HTTP 409" in status["detail"]
    finally:
        a.server.shutdown()
        b.server.shutdown()
