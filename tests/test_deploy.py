"""deploy/ stays consistent with the code: docker-compose.yml, the systemd units, their env files
and the proxy snippet name only flags, variables, files and routes the app has, and the
configuration they give starts (a non-loopback web app with a login, a shared Redis and
PostgreSQL named by their services)."""

import configparser
import re
import shlex
from pathlib import Path

import pytest
import yaml

import app as app_module
from services.settings import AppConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
GUNICORN_VARS = {"WEB_CONCURRENCY", "WEB_THREADS", "BIND", "PROMETHEUS_MULTIPROC_DIR"}
KNOWN_VARS = set(app_module.ENV.values()) | GUNICORN_VARS | {"SECRET_KEY"}
WORKER = ["-A", "app:celery_app", "worker", "--concurrency", "1", "--loglevel", "INFO"]  # as tests/test_jobs.py runs it


def example_env() -> dict:
    return dict(line.split("=", 1) for line in (DEPLOY / "example.env").read_text().splitlines() if "=" in line)


def substituted(text: str, values: dict) -> str:
    """docker compose's ${NAME:?message} and ${NAME:-default}, from `values`."""

    def one(m):
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if name in values:
            return values[name]
        assert op == ":-", f"${{{name}}} has no value in example.env and no default"
        return rest

    return re.sub(r"\$\{(\w+)(:\?|:-)([^}]*)\}", one, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(substituted((DEPLOY / "docker-compose.yml").read_text(), example_env()))


def config_of(environment: dict, argv=()) -> AppConfig:
    unknown = set(environment) - KNOWN_VARS
    assert not unknown, f"variables the app does not read: {unknown}"
    env = {k: str(v) for k, v in environment.items()}
    config, _ = app_module.parse_args(list(argv), environ=env)
    return config


def test_compose_runs_the_web_app_the_collector_and_the_job_worker_on_its_redis_and_postgresql(compose, tmp_path):
    services = compose["services"]
    assert set(services) == {"web", "collector", "jobs", "redis", "postgres"}
    web, collector, postgres = services["web"], services["collector"], services["postgres"]
    config = config_of(web["environment"])
    users = tmp_path / "users"
    users.write_text("")
    app_module.check_exposure(AppConfig(**{**config.__dict__, "users_file": str(users)}))  # starts: it has a login
    assert config.host == "0.0.0.0" and config.users_file and config.trusted_proxies
    assert web["ports"] == [f"127.0.0.1:{config.port}:{config.port}"], (
        "published on loopback only: the proxy is in front"
    )
    assert config.cache_url.startswith("redis://") and "@redis:6379/" in config.cache_url
    assert "@postgres:5432/" in config.database_url and config.database_url.startswith("postgresql+psycopg://")
    user, db = postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_DB"]
    assert f"://{user}:" in config.database_url and config.database_url.endswith(f"/{db}")
    assert f":{postgres['environment']['POSTGRES_PASSWORD']}@" in config.database_url
    redis_password = services["redis"]["environment"]["REDIS_PASSWORD"]
    assert f":{redis_password}@" in config.cache_url and redis_password in " ".join(services["redis"]["command"])
    argv = collector["command"]
    assert argv[:2] == ["python", "app.py"]
    collector_config = config_of(collector["environment"], argv[2:])
    assert app_module.parse_args(argv[2:], environ={})[1].collector
    assert (collector_config.cache_url, collector_config.database_url) == (config.cache_url, config.database_url)
    jobs = services["jobs"]
    assert jobs["command"] == ["celery", *WORKER]
    assert config_of(jobs["environment"]).cache_url == config.cache_url, "queued on the web app's Redis"
    for app_service in (web, collector, jobs):
        assert set(app_service["depends_on"]) == {"redis", "postgres"}
    assert "/api/health" in " ".join(web["healthcheck"]["test"])
    assert web["volumes"][-1].endswith(":" + str(Path(config.users_file).parent))


def test_the_image_runs_gunicorn_with_the_config_in_deploy():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE).group(1)
    assert '"-c", "deploy/gunicorn.conf.py", "app:server"' in cmd and (DEPLOY / "gunicorn.conf.py").exists()
    assert "requirements.txt" in dockerfile
    assert "gunicorn" in (DEPLOY.parent / "requirements.txt").read_text(), "the image installs requirements.txt only"


@pytest.mark.parametrize(
    "unit", ["pair-monitor-web.service", "pair-monitor-collector.service", "pair-monitor-jobs.service"]
)
def test_the_systemd_units_start_what_exists_with_the_env_file(unit, tmp_path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / unit)
    service = parser["Service"]
    assert service["EnvironmentFile"] == "/etc/pair-monitor/env"
    argv = shlex.split(service["ExecStart"])
    if argv[0].endswith("gunicorn"):
        assert argv[1:] == ["-c", "deploy/gunicorn.conf.py", "app:server"]
    elif argv[0].endswith("celery"):
        assert argv[1:] == WORKER
    else:
        assert argv[1:] == ["app.py", "--collector"]
    env = dict(line.split("=", 1) for line in (DEPLOY / "pair-monitor.env").read_text().splitlines() if "=" in line)
    config = config_of(env)
    users = tmp_path / "users"
    users.write_text("")
    app_module.check_exposure(AppConfig(**{**config.__dict__, "users_file": str(users)}))
    assert service["ReadWritePaths"] == config.data_dir, "the data dir is the one place it may write"


def test_the_proxy_snippet_never_passes_a_clients_user_header_and_streams_the_push_route(tmp_path):
    conf = (DEPLOY / "nginx.conf").read_text()
    locations = re.findall(r"location (\S+) \{(.*?)\n    \}", conf, re.DOTALL)
    assert [path for path, _ in locations] == ["/", "/api/push"]
    for _, body in locations:
        assert 'proxy_set_header X-Forwarded-User "";' in body, "a client's own X-Forwarded-User is dropped"
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in body, "one hop, as --trusted-proxies reads it"
    push = dict(locations)["/api/push"]
    assert "proxy_buffering off;" in push
    server = app_module.create_app(AppConfig(source="sim", data_dir=str(tmp_path))).server
    assert any(rule.rule == "/api/push" for rule in server.url_map.iter_rules())
