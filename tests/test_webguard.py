"""Browser-facing defences: the Host header, same-origin writes, no framing, a safe start."""

import pytest

import app as app_module
from app import create_app
from components.ids import Settings as SID
from services.settings import AppConfig
from services.webguard import allowed_hosts, host_name

EVIL = "http://evil.example"


@pytest.fixture()
def app(tmp_path):
    return create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=600, allowed_hosts=("desk.example",)))


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8050", "127.0.0.1.evil.example", "desk.example.evil"])
def test_a_foreign_host_header_gets_a_400_on_every_route(app, host):
    client = app.server.test_client()
    for path in ("/", "/api/health", "/_dash-layout", "/metrics"):
        resp = client.get(path, headers={"Host": host})
        assert resp.status_code == 400, (path, resp.status_code)
        assert "--allowed-hosts" in resp.get_json()["error"]


@pytest.mark.parametrize("host", ["localhost", "localhost:8050", "127.0.0.1:8050", "[::1]:8050", "DESK.example:443"])
def test_loopback_the_bound_address_and_allowed_hosts_are_served(app, host):
    assert app.server.test_client().get("/api/health", headers={"Host": host}).status_code == 200


def test_every_interface_needs_the_names_given():
    assert "10.0.0.5" not in allowed_hosts("0.0.0.0", ())
    assert "10.0.0.5" in allowed_hosts("10.0.0.5", ())
    assert allowed_hosts("0.0.0.0", ["Desk.Example:8050"]) >= {"desk.example", "localhost"}
    assert host_name("[::1]:8050") == "::1" and host_name("::1") == "::1"


@pytest.mark.parametrize(
    "headers",
    [{"Origin": EVIL}, {"Referer": EVIL + "/attack.html"}, {"Origin": "null"}, {"Origin": "http://localhost:9999"}],
)
def test_a_cross_origin_post_changes_nothing(app, headers):
    client = app.server.test_client()
    market = app.server.extensions["market"]
    resp = client.post("/api/alerts/test", headers=headers)
    assert resp.status_code == 403 and "cross-origin" in resp.get_json()["error"]
    assert market.alerts.last_id() == 0
    body = {
        "output": f"{SID.WEBHOOK_MSG}.children",
        "outputs": {"id": SID.WEBHOOK_MSG, "property": "children"},
        "inputs": [{"id": SID.WEBHOOK_SAVE, "property": "n_clicks", "value": 1}],
        "state": [{"id": SID.WEBHOOK, "property": "value", "value": "http://93.184.216.34/hook"}],
        "changedPropIds": [f"{SID.WEBHOOK_SAVE}.n_clicks"],
    }
    assert client.get("/").status_code == 200  # the pages' callbacks are registered
    assert client.post("/_dash-update-component", json=body, headers=headers).status_code == 403
    assert market.current_settings().webhook_url == ""
    same = client.post("/_dash-update-component", json=body, headers={"Origin": "http://localhost"})
    assert same.status_code == 200 and market.current_settings().webhook_url == "http://93.184.216.34/hook"


def test_same_origin_and_non_browser_posts_pass(app):
    client = app.server.test_client()
    assert client.post("/api/alerts/test", headers={"Origin": "http://localhost"}).status_code == 201
    assert client.post("/api/alerts/test").status_code == 429, "no Origin (curl): passes the check, meets the limit"


@pytest.mark.parametrize("path", ["/", "/settings", "/api/health", "/api/nothing", "/_dash-layout"])
def test_no_page_can_be_framed(app, path):
    resp = app.server.test_client().get(path)
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_debug_is_refused_on_a_non_loopback_host_and_warns_on_loopback():
    with pytest.raises(SystemExit):
        app_module.parse_args(["--debug", "--host", "0.0.0.0"], environ={})
    config, _ = app_module.parse_args(["--debug"], environ={})
    [warning] = app_module.startup_warnings(config)
    assert "Python console" in warning


def test_an_open_non_loopback_host_warns_and_allowed_hosts_come_from_the_environment(tmp_path):
    env = {"ALLOWED_HOSTS": "desk.example, ops.example"}
    config, _ = app_module.parse_args(["--host", "0.0.0.0", "--insecure-no-auth"], environ=env)
    assert config.allowed_hosts == ("desk.example", "ops.example")
    [warning] = app_module.startup_warnings(config)
    assert "no login" in warning and "--allowed-hosts" in warning
    users = tmp_path / "users"
    users.write_text("")
    locked, _ = app_module.parse_args(["--host", "0.0.0.0", "--users-file", str(users)], environ=env)
    assert app_module.startup_warnings(locked) == []
    assert app_module.startup_warnings(app_module.parse_args([], environ={})[0]) == []
