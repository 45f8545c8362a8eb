"""Scans on Celery workers (issue 12): with a cache URL the scanner's background callbacks are
queued through Redis to `celery -A app:celery_app worker`, so that a scan started through one
host is followed, cancelled and read through another (a load balancer with no sticky sessions).
Without one, they run in a process the web worker forks, with no worker to start."""

import os
import subprocess
import sys

import dash
import pytest
from test_browser import press, scan_then_cancel, scan_to_the_end
from test_deploy import WORKER

import app as app_module
from app import create_app
from components import ids
from components.ids import Scanner as scanner
from loopback import ROOT, RoundRobin, answers, free_port, wait_for
from services.settings import AppConfig


def test_the_scans_run_in_forked_processes_by_default_and_on_celery_with_a_cache_url(tmp_path):
    alone = create_app(AppConfig(source="sim", data_dir=str(tmp_path / "a")))
    assert isinstance(alone._background_manager, dash.DiskcacheManager)
    assert "celery" not in alone.server.extensions
    url = "redis://:pw@127.0.0.1:6390/3"
    desk = create_app(AppConfig(source="sim", data_dir=str(tmp_path / "b"), cache_url=url))
    jobs = desk.server.extensions["celery"]
    assert isinstance(desk._background_manager, dash.CeleryManager) and desk._background_manager.handle is jobs
    assert jobs.conf.broker_url == url and jobs.conf.result_backend == url, "the same Redis as the cache"
    assert desk.server.secret_key, "job handles are signed alike by every process (not a secret kept in Redis)"
    several, _ = app_module.parse_args(["--host", "0.0.0.0", "--insecure-no-auth", "--cache-url", url], environ={})
    assert any("same SECRET_KEY" in w for w in app_module.startup_warnings(several, environ={}))
    assert not any("SECRET_KEY" in w for w in app_module.startup_warnings(several, environ={"SECRET_KEY": "k"}))


class Desk:
    """Two hosts (`python app.py`, separate data dirs and ports) and one Celery worker, on one
    Redis and a Binance-shaped server, each logging to a file of its own."""

    def __init__(self, tmp_path, env):
        self.tmp_path, self.procs = tmp_path, []
        self.hosts = [f"http://127.0.0.1:{self._start(name, env, ['app.py'])}" for name in ("a", "b")]
        self._start("worker", env, ["-m", "celery", *WORKER])  # deploy/'s unit and compose service

    def _start(self, name, env, argv) -> int:
        port = free_port()
        env = {**os.environ, **env, "DATA_DIR": str(self.tmp_path / name), "PORT": str(port)}
        log = open(self.tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return port

    def log(self, name) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def wait_ready(self):
        for host in self.hosts:
            wait_for(lambda host=host: answers(f"{host}/api/health"), timeout=60, message=f"{host} serving")
        wait_for(lambda: " ready." in self.log("worker"), timeout=60, message="the Celery worker ready")

    def close(self):
        for proc, _ in self.procs:
            proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


@pytest.fixture
def desk(tmp_path, redis_server, fake_binance):
    fake_binance.add_scan_universe()
    env = {
        "SOURCE": "binance",
        "BINANCE_BASE_URL": fake_binance.url,
        "CACHE_URL": redis_server.url,
        "SECRET_KEY": "the-same-on-every-host",
    }
    desk = Desk(tmp_path, env)
    yield desk
    desk.close()


def test_a_scan_through_a_load_balancer_runs_on_the_worker_is_followed_through_either_host_and_waits_out_redis(
    dash_duo, desk, redis_server, fake_binance
):
    desk.wait_ready()
    balancer = RoundRobin(desk.hosts)
    try:
        dash_duo.driver.get(balancer.url + "/")
        dash_duo.wait_for_element(f"#{ids.NAV_PAIR}", timeout=30)
        scan_then_cancel(dash_duo, fake_binance)
        wait_for(lambda: "Terminating" in desk.log("worker"), timeout=10, message="the worker to stop the scan")
        scan_to_the_end(dash_duo)  # the stopped scan left the slot: this one runs

        redis_server.stop()  # the queue is gone: a scan is refused in words, at once
        press(dash_duo, scanner.SCAN)
        dash_duo.wait_for_contains_text(f"#{scanner.MSG}", "Redis, which is not answering", timeout=15)
        wait_for(lambda: not dash_duo.find_element(f"#{scanner.SCAN}").get_attribute("disabled"), message="Scan again")
        redis_server.start()  # back (empty: no persistence): the worker and both hosts use it again
        press(dash_duo, scanner.SCAN)
        wait_for(
            lambda: desk.log("worker").count("succeeded in") == 2, timeout=30, message="a scan on the worker again"
        )
        wait_for(
            lambda: not dash_duo.find_elements(f"#{scanner.MSG} .alert"), message="the refusal replaced by a result"
        )
        assert dash_duo.get_logs() == []
    finally:
        balancer.close()
    callbacks = {host: balancer.served[host, "/_dash-update-component"] for host in desk.hosts}
    assert min(callbacks.values()) >= 3, f"both hosts followed the scans: {callbacks}"
    assert desk.log("worker").count("succeeded in") == 2, "the cancelled scan never ended"
    assert not any((desk.tmp_path / host / "jobs").exists() for host in ("a", "b")), "no scan forked on a host"
    for name in ("a", "b", "worker"):
        assert redis_server.password not in desk.log(name), f"{name}'s log shows Redis's password"
