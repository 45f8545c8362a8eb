"""Per-client rate limits on the expensive and state-changing routes: a 429 with Retry-After,
counted across hosts on the deployment's Redis."""

from werkzeug.security import generate_password_hash

from app import create_app
from services import auth
from services.settings import AppConfig


def host(tmp_path, name, users, cache_url=""):
    config = AppConfig(
        source="sim", data_dir=str(tmp_path / name), history_s=600, users_file=str(users), cache_url=cache_url
    )
    return create_app(config).server.test_client()


def editor_token(tmp_path):
    users = tmp_path / "users"
    users.write_text(
        f"user ed editor {generate_password_hash('ed-password')}\nuser vi viewer {generate_password_hash('vi-pass')}\n"
    )
    return users, {"Authorization": f"Bearer {auth.add_token(str(users), 'ed')}"}


def limited(resp) -> bool:
    """A 429 from the limiter (not the test alert's own 5-second gap, also a 429)."""
    return resp.status_code == 429 and "per 1 minute" in resp.get_json()["error"]


def test_exports_past_the_limit_get_a_429_with_retry_after_and_other_clients_go_on(tmp_path):
    users, headers = editor_token(tmp_path)
    client = host(tmp_path, "a", users)
    statuses = [client.get("/api/alerts.csv", headers=headers).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60 and statuses[60] == 429
    resp = client.get("/api/alerts.csv", headers=headers)
    assert limited(resp) and 0 < int(resp.headers["Retry-After"]) <= 61
    assert resp.is_json and "60 per 1 minute" in resp.get_json()["error"]
    assert client.get("/api/health").status_code == 200, "health is never limited"
    assert client.get("/api/settings", headers=headers).status_code == 200, "nor reading the settings"
    client.post("/login", data={"name": "vi", "password": "vi-pass"})
    assert client.get("/api/alerts.csv").status_code == 200, "another client has its own count"


def test_a_flood_of_test_alerts_is_limited_across_two_hosts_on_one_redis(tmp_path, redis_server):
    users, headers = editor_token(tmp_path)
    a, b = (host(tmp_path, "shared", users, redis_server.url) for _ in range(2))  # one database, as on a desk
    answers = [(a if i % 2 else b).post("/api/alerts/test", headers=headers) for i in range(10)]
    assert answers[0].status_code == 201
    assert all(r.status_code == 429 for r in answers[1:]), "the one-per-5-s gap, then the limit"
    assert [limited(r) for r in answers] == [False] * 6 + [True] * 4, "6 a minute for the client, over both hosts"


def test_without_redis_each_host_counts_its_own(tmp_path):
    users, headers = editor_token(tmp_path)
    a, b = (host(tmp_path, "shared", users) for _ in range(2))
    answers = [(a if i % 2 else b).post("/api/alerts/test", headers=headers) for i in range(10)]
    assert not any(limited(r) for r in answers), "5 on each host: under each one's 6"
