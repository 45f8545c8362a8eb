"""Every server callback called by hand with values no page sends: never a 500 or a traceback,
never a change to what is saved. A browser only sends what its components hold; anyone with
curl can send anything."""

import itertools
import json

import pytest

from app import create_app
from components.ids import Settings as SID
from services.settings import AppConfig

NASTY = [None, -1, 10**30, 1e308, True, "x" * 10_000, "=cmd|' /C calc'!A0", {"a": [1, {"b": 2}]}, [1, "two", None]]
MALFORMED = [
    "not json at all",
    {},
    {"output": "no-such.children", "outputs": {"id": "no-such", "property": "children"}, "inputs": []},
    {"output": f"{SID.SAVE_MSG}.children"},
    {"output": f"{SID.SAVE_MSG}.children", "inputs": "nope", "state": 7, "outputs": []},
    [1, 2, 3],
]


@pytest.fixture()
def app(tmp_path):
    app = create_app(AppConfig(source="sim", data_dir=str(tmp_path), history_s=600))
    client = app.server.test_client()
    assert client.get("/").status_code == 200  # registers the pages' callbacks
    return app


def _spec(item, value, crafted_key=None):
    """One input or state in a request: a plain id with `value`, or for an ALL pattern a list
    with one item whose wildcard key holds `crafted_key` (an index or a URL no button has)."""
    raw = item["id"]
    if not raw.startswith("{"):
        return {"id": raw, "property": item["property"], "value": value}
    pattern = json.loads(raw)
    concrete = {k: (crafted_key if isinstance(v, list) else v) for k, v in pattern.items()}
    return [{"id": concrete, "property": item["property"], "value": value}]


def _outputs(key):
    parts = key.split("@")[0].strip(".").split("...")
    specs = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in parts]
    return specs if key.startswith("..") else specs[0]


def _body(key, spec, value, crafted_key):
    inputs = [_spec(i, value, crafted_key) for i in spec["inputs"]]
    first = inputs[0][0] if isinstance(inputs[0], list) else inputs[0]
    first_id = json.dumps(first["id"], separators=(",", ":")) if isinstance(first["id"], dict) else first["id"]
    return {
        "output": key,
        "outputs": _outputs(key),
        "inputs": inputs,
        "state": [_spec(s, value, crafted_key) for s in spec["state"]],
        "changedPropIds": [f"{first_id}.{first['property']}"],
    }


def server_callbacks(app):
    """The server callbacks of the pages (the tick has its crafted-request tests in test_tick.py)."""
    return {k: v for k, v in app.callback_map.items() if v.get("callback") and not k.startswith("..nav-pair")}


def test_every_server_callback_answers_crafted_values_without_a_500_or_a_change(app):
    market = app.server.extensions["market"]
    client = app.server.test_client()
    before = market.current_settings()
    alerts_before = market.alerts.last_id()
    callbacks = server_callbacks(app)
    assert len(callbacks) >= 8, sorted(callbacks)  # the settings, analytics and backtest callbacks
    for (key, spec), value, crafted_key in itertools.product(
        callbacks.items(), NASTY, [-1, 10**9, "0", "http://169.254.169.254/", None]
    ):
        if key.startswith(f"{SID.TEST_MSG}.") or key.startswith(f"..{SID.CLEAR_MSG}."):
            continue  # any click acts, by design (the test alert is rate-limited: test_webhook_guard.py)
        resp = client.post("/_dash-update-component", json=_body(key, spec, value, crafted_key))
        text = resp.get_data(as_text=True)
        assert resp.status_code in (200, 204), (key, value, crafted_key, resp.status_code, text[:300])
        assert "Traceback" not in text
    assert market.current_settings() == before
    assert market.alerts.last_id() == alerts_before


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_callback_request_is_a_one_line_400(app, body):
    client = app.server.test_client()
    if isinstance(body, str):
        resp = client.post("/_dash-update-component", data=body, content_type="application/json")
    else:
        resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert resp.is_json and "error" in resp.get_json()


def _rule_delete(app, index):
    key = next(k for k in server_callbacks(app) if k.startswith(f"..{SID.RULES}."))
    body = _body(key, app.callback_map[key], 1, index)
    body["inputs"][0]["value"] = None  # the Add button was not clicked; a Remove button was
    button = body["inputs"][1][0]["id"]
    body["changedPropIds"] = [json.dumps(button, separators=(",", ":"), sort_keys=True) + ".n_clicks"]
    return app.server.test_client().post("/_dash-update-component", json=body)


@pytest.mark.parametrize("index", [-1, 99, "0", 0.0, True])
def test_a_rule_index_no_button_has_deletes_nothing(app, index):
    market = app.server.extensions["market"]
    rules = market.current_settings().rules
    assert len(rules) >= 1
    resp = _rule_delete(app, index)
    assert resp.status_code in (200, 204)
    assert market.current_settings().rules == rules


def test_a_rule_index_a_button_has_deletes_that_rule(app):
    market = app.server.extensions["market"]
    rules = market.current_settings().rules
    resp = _rule_delete(app, len(rules) - 1)
    assert resp.status_code == 200 and "Removed" in resp.get_data(as_text=True)
    assert market.current_settings().rules == rules[:-1]


@pytest.mark.parametrize("url", ["http://evil.example", "http://127.0.0.1:6379/", "https://api.binance.com.evil.io"])
def test_the_host_switch_takes_only_a_host_the_app_offers(app, url):
    market = app.server.extensions["market"]
    key = next(k for k in server_callbacks(app) if k.startswith(f"{SID.HOST_MSG}."))
    resp = app.server.test_client().post("/_dash-update-component", json=_body(key, app.callback_map[key], 1, url))
    assert resp.status_code == 200
    assert "Not switched: Binance base URL must be one of" in resp.get_data(as_text=True)
    assert market.current_settings().binance_url == ""


def test_the_host_switch_takes_an_offered_host(app):
    market = app.server.extensions["market"]
    key = next(k for k in server_callbacks(app) if k.startswith(f"{SID.HOST_MSG}."))
    body = _body(key, app.callback_map[key], 1, "https://data-api.binance.vision")
    resp = app.server.test_client().post("/_dash-update-component", json=body)
    assert resp.status_code == 200 and "Switched to" in resp.get_data(as_text=True)
    assert market.current_settings().binance_url == "https://data-api.binance.vision"
