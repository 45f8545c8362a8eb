"""A door that locks: who may look and who may change things once the app is reachable beyond
this machine (users file, tokens, a trusted proxy's header), and a start refused without one."""

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flask_login import login_user
from plotly.utils import PlotlyJSONEncoder
from werkzeug.security import generate_password_hash

import app as app_module
from app import create_app
from components.ids import Settings as SID
from services import auth
from services.settings import AppConfig

ROOT = Path(__file__).resolve().parents[1]
PROXY = "10.0.0.7"


def users_file(tmp_path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        "# name role hash\n"
        f"user ed editor {generate_password_hash('ed-password')}\n"
        f"user vi viewer {generate_password_hash('vi-password')}\n"
        "user carol editor -\n"  # known to the proxy only: no password here
    )
    return path


def make_app(tmp_path, **config):
    return create_app(AppConfig(source="sim", data_dir=str(tmp_path / "data"), history_s=600, **config))


@pytest.fixture()
def locked(tmp_path):
    return make_app(tmp_path, users_file=str(users_file(tmp_path)))


def sign_in(client, name, password, next_="/"):
    return client.post("/login", data={"name": name, "password": password, "next": next_})


def test_a_non_loopback_bind_without_a_way_to_know_users_is_refused(tmp_path, capsys):
    config, _ = app_module.parse_args(["--host", "0.0.0.0"], environ={})
    with pytest.raises(SystemExit, match="nobody would need to sign in: give --users-file"):
        app_module.check_exposure(config)
    for fine in (["--users-file", str(users_file(tmp_path))], ["--trust-proxy-auth"], ["--insecure-no-auth"]):
        app_module.check_exposure(app_module.parse_args(["--host", "0.0.0.0", *fine], environ={})[0])
    app_module.check_exposure(app_module.parse_args([], environ={})[0])  # loopback: its one user
    bad = tmp_path / "bad-users"
    bad.write_text("user ed admin xyz\n")
    with pytest.raises(SystemExit, match=re.escape("bad-users, line 1: expected 'user NAME viewer|editor HASH'")):
        app_module.check_exposure(app_module.parse_args(["--users-file", str(bad)], environ={})[0])
    done = subprocess.run(
        [sys.executable, "app.py", "--source", "sim", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith(
        "error: --host 0.0.0.0 is reachable"
    )


def test_insecure_no_auth_serves_open_and_says_so_on_every_page(tmp_path):
    app = make_app(tmp_path, host="0.0.0.0", insecure_no_auth=True, allowed_hosts=("desk.example",))
    layout = app.server.test_client().get("/_dash-layout", headers={"Host": "desk.example"}).get_data(as_text=True)
    assert "No login: anyone who can reach 0.0.0.0" in layout
    assert "No login" not in make_app(tmp_path).server.test_client().get("/_dash-layout").get_data(as_text=True)


def test_anonymous_requests_are_refused_except_health_metrics_and_the_login_page(locked):
    client = locked.server.test_client()
    for path in ("/api/settings", "/api/pairs", "/api/alerts.csv", "/api/ticks.csv", "/_dash-layout"):
        resp = client.get(path)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer", path
    assert client.post("/api/alerts/test").status_code == 401
    assert client.post("/_dash-update-component", json={}).status_code == 401
    page = client.get("/analytics?pair=BTCUSDT-ETHUSDT")
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/analytics"
    assert client.get("/api/health").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.get("/login").status_code == 200 and client.get("/assets/style.css").status_code == 200
    assert locked.server.extensions["market"].alerts.last_id() == 0


def test_signing_in_opens_the_app_with_a_safe_cookie_and_signing_out_closes_it(locked):
    client = locked.server.test_client()
    wrong = sign_in(client, "ed", "not-it")
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.get_data(as_text=True)
    assert sign_in(client, "nobody", "ed-password").status_code == 401
    assert sign_in(client, "carol", "").status_code == 401, "a proxy-only user has no password to guess"
    resp = sign_in(client, "ed", "ed-password", next_="/settings")
    assert resp.status_code == 302 and resp.headers["Location"] == "/settings"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/api/settings").status_code == 200 and client.get("/").status_code == 200
    client.get("/logout")
    assert client.get("/api/settings").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_the_login_never_redirects_off_the_site(locked, target):
    resp = sign_in(locked.server.test_client(), "ed", "ed-password", next_=target)
    assert resp.headers["Location"] == "/"


def test_a_viewer_sees_everything_and_changes_nothing(locked):
    client = locked.server.test_client()
    sign_in(client, "vi", "vi-password")
    market = locked.server.extensions["market"]
    assert client.get("/api/pairs").status_code == 200 and client.get("/api/alerts.csv").status_code == 200
    refusals = [
        client.patch("/api/settings", json={"threshold": 3.0}),
        client.post("/api/pairs", json={"a": "SOLUSDT", "b": "BTCUSDT"}),
        client.delete("/api/pairs/BTCUSDT-ETHUSDT"),
        client.post("/api/alerts/test"),
    ]
    for resp in refusals:
        assert resp.status_code == 403 and resp.get_json()["error"] == "Only editors can change this; vi is a viewer"
    assert market.current_settings().threshold == 2.0 and len(market.watchlist()) == 1 and market.alerts.last_id() == 0
    body = {  # the Settings page's webhook save, called by hand
        "output": f"{SID.WEBHOOK_MSG}.children",
        "outputs": {"id": SID.WEBHOOK_MSG, "property": "children"},
        "inputs": [{"id": SID.WEBHOOK_SAVE, "property": "n_clicks", "value": 1}],
        "state": [{"id": SID.WEBHOOK, "property": "value", "value": "http://93.184.216.34/hook"}],
        "changedPropIds": [f"{SID.WEBHOOK_SAVE}.n_clicks"],
    }
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200 and "Only editors can change this" in resp.get_data(as_text=True)
    assert market.current_settings().webhook_url == ""
    test_button = {
        "output": f"{SID.TEST_MSG}.children",
        "outputs": {"id": SID.TEST_MSG, "property": "children"},
        "inputs": [{"id": SID.TEST_ALERT, "property": "n_clicks", "value": 1}],
        "changedPropIds": [f"{SID.TEST_ALERT}.n_clicks"],
    }
    resp = client.post("/_dash-update-component", json=test_button)
    assert "Not sent: Only editors can change this; vi is a viewer" in resp.get_data(as_text=True)
    assert market.alerts.last_id() == 0


def test_an_editors_token_changes_settings_that_the_other_host_shows(tmp_path, locked):
    path = tmp_path / "users"
    token = auth.add_token(str(path), "ed")
    assert token not in path.read_text() and stat.S_IMODE(os.stat(path).st_mode) == 0o600, (
        "only its digest, kept private"
    )
    other = make_app(tmp_path, users_file=str(path))  # another host on the same database
    locked.server.extensions["auth"][0]._checked = -1e9  # its look at the file every 2 s, now
    headers = {"Authorization": f"Bearer {token}"}
    resp = locked.server.test_client().patch("/api/settings", json={"threshold": 3.0}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    other.server.extensions["market"].settings_store._checked = -1e9  # its once-a-second look, now
    assert other.server.test_client().get("/api/settings", headers=headers).get_json()["threshold"] == 3.0
    wrong = {"Authorization": "Bearer " + token[:-2] + "xx"}
    assert locked.server.test_client().get("/api/settings", headers=wrong).status_code == 401


def test_add_user_and_add_token_write_the_users_file_from_the_command_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"

    def run(*args, stdin=""):
        """`python app.py --users-file PATH ARGS` (in this process): (exit status, stdout, error)."""
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # not a terminal: one line is the password
        try:
            app_module.main(["--users-file", str(path), *args])
            status, error = 0, ""
        except SystemExit as exc:
            status, error = 1, str(exc)
        return status, capsys.readouterr().out, error

    assert run("--add-user", "ann:editor", stdin="long-enough-pw\n")[0] == 0
    assert run("--add-user", "ann:viewer", stdin="another-password\n")[0] == 0, "replaced, not added"
    status, _, error = run("--add-user", "bob:editor", stdin="short\n")
    assert status != 0 and "at least 8 characters" in error
    assert run("--add-user", "bad name:editor", stdin="long-enough-pw\n")[0] != 0
    status, token, _ = run("--add-token", "ann")
    token = token.strip()
    assert status == 0 and len(token) >= 40
    directory = auth.Directory.load(path)
    assert directory.check_password("ann", "another-password") == auth.User("ann", "viewer")
    assert directory.check_password("ann", "long-enough-pw") is None
    assert directory.token_user(token) == auth.User("ann", "viewer")
    assert run("--add-token", "nobody")[0] != 0


def test_a_proxys_user_header_is_believed_from_the_trusted_proxy_only(tmp_path):
    app = make_app(
        tmp_path,
        users_file=str(users_file(tmp_path)),
        trust_proxy_auth=True,
        trusted_proxies=(PROXY + "/32",),
        allowed_hosts=("desk.example",),
    )
    client = app.server.test_client()
    as_proxy = {"environ_base": {"REMOTE_ADDR": PROXY}}
    resp = client.patch("/api/settings", json={"threshold": 3.0}, headers={"X-Forwarded-User": "carol"}, **as_proxy)
    assert resp.status_code == 200, "carol is an editor in the users file"
    resp = client.patch("/api/settings", json={"threshold": 2.5}, headers={"X-Forwarded-User": "mallory"}, **as_proxy)
    assert resp.status_code == 403, "someone the proxy knows but the file does not: a viewer"
    forged = client.get(
        "/api/settings", headers={"X-Forwarded-User": "carol"}, environ_base={"REMOTE_ADDR": "10.0.0.8"}
    )
    assert forged.status_code == 401, "the header from anyone else is not believed"
    # X-Forwarded-Host and -For from the proxy: the Host check holds behind it
    behind = client.get(
        "/api/health", headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "1.2.3.4"}, **as_proxy
    )
    assert behind.status_code == 400
    ok = client.get("/api/health", headers={"X-Forwarded-Host": "desk.example"}, **as_proxy)
    assert ok.status_code == 200
    direct = client.get(
        "/api/health", headers={"X-Forwarded-Host": "desk.example"}, environ_base={"REMOTE_ADDR": "10.0.0.8"}
    )
    assert direct.status_code == 200, "not a proxy: its X-Forwarded-Host is not read (its Host is localhost)"


def test_a_webhooks_token_is_never_shown_by_the_api_health_a_viewers_page_or_the_log(tmp_path, httpserver, caplog):
    httpserver.expect_request("/services/T0/B0/s3cr3tT0ken", method="POST").respond_with_data("no", status=500)
    hook = httpserver.url_for("/services/T0/B0/s3cr3tT0ken") + "?key=s3cr3tK3y"
    origin = f"http://localhost:{httpserver.port}/…"
    app = make_app(tmp_path, users_file=str(users_file(tmp_path)), allow_private_webhooks=True)
    editor, viewer = app.server.test_client(), app.server.test_client()
    sign_in(editor, "ed", "ed-password")
    sign_in(viewer, "vi", "vi-password")
    saved = editor.patch("/api/settings", json={"webhook_url": hook})
    assert saved.status_code == 200 and saved.get_json()["webhook_url"] == origin
    market = app.server.extensions["market"]
    assert market.current_settings().webhook_url == hook, "kept whole, shown by its origin"
    body = editor.get("/api/settings").get_json()
    assert editor.patch("/api/settings", json={**body, "threshold": 2.5}).status_code == 200
    assert market.current_settings().webhook_url == hook, "a GET's body PATCHed back leaves the webhook as it was"
    assert editor.post("/api/alerts/test").status_code == 201
    assert market.notifier.wait_idle()
    health = editor.get("/api/health").get_data(as_text=True)
    assert "answered HTTP 500" in health
    from pages import settings as settings_page  # (imported by the app: Dash registers the pages)

    with app.server.test_request_context("/settings"):
        login_user(auth.User("vi", "viewer"))
        page = json.dumps(settings_page.layout(), cls=PlotlyJSONEncoder, ensure_ascii=False)
        login_user(auth.User("ed", "editor"))
        assert "s3cr3tT0ken" in json.dumps(settings_page.layout(), cls=PlotlyJSONEncoder, ensure_ascii=False), (
            "the editor edits it whole"
        )
    assert origin in page and "s3cr3t" not in page, "a viewer's Settings page shows its origin only"
    app_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")  # (the receiver's access log)
    assert "webhook delivery failed" in app_log
    for text in (health, editor.get("/api/settings").get_data(as_text=True), app_log):
        assert "s3cr3t" not in text
