"""Loopback helpers shared by the tests and the benchmarks: free ports, and the app in its own
process (so that its memory, its start-up and its exit are its own)."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float = 15.0, message: str = "condition", step: float = 0.1):
    """`predicate()`'s first truthy value, asked every `step` s; AssertionError after `timeout` s."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {message}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim_app(data_dir: Path, port: int, quiet: bool = False) -> subprocess.Popen:
    """`python app.py --source sim` on `port`, its output (text) on the process's stdout, or
    dropped when `quiet` (a long run whose log nobody reads must not fill the pipe)."""
    return subprocess.Popen(
        [sys.executable, "app.py", "--source", "sim", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answers(url: str) -> bool:
    """Whether `url` answers at all (any status): False while nothing listens there yet, or its
    workers are still importing (gunicorn accepts before they are ready)."""
    try:
        return requests.get(url, timeout=5).status_code > 0
    except requests.RequestException:
        return False


def wait_until_serving(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    """Until /api/health answers (any status); AssertionError if the process exits or it takes too long."""
    deadline = time.time() + timeout
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            return
        except requests.ConnectionError:
            assert proc.poll() is None, f"the app exited with {proc.returncode}"
            assert time.time() < deadline, "the app did not start"
            time.sleep(0.2)


class RoundRobin:
    """A load balancer on a free loopback port with no sticky sessions: each request goes to the
    next of `hosts` in turn (`served` counts them per host and path)."""

    HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})  # Host is passed on

    def __init__(self, hosts: list[str]):
        proxy, turn, lock = self, iter(range(1 << 62)), threading.Lock()
        self.served: Counter = Counter()

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self):
                self._forward()

            def do_POST(self):
                self._forward()

            def _forward(self):
                with lock:
                    host = hosts[next(turn) % len(hosts)]
                    proxy.served[host, self.path.split("?")[0]] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                headers["Accept-Encoding"] = "identity"
                answer = requests.request(self.command, host + self.path, data=body, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in proxy.HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RedisServer:
    """Debian's redis-server on a free loopback port, with a password and no persistence; it can
    be stopped and started again on the same port (a Redis restart). `.ci/run` installs it."""

    def __init__(self, work_dir: Path):
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            raise AssertionError("redis-server is not installed: apt-get install -y redis-server (.ci/run does)")
        self.port, self.password, self.dir = free_port(), secrets.token_hex(8), Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2)

    def start(self) -> None:
        command = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def answers():
            try:
                return self.client().ping()
            except redis.ConnectionError:
                assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
                return False

        wait_for(answers, timeout=10, message="redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class PostgresServer:
    """Debian's PostgreSQL in a temp dir on a free loopback port: `initdb` and `pg_ctl`, run as the
    `postgres` user when the tests run as root (the server refuses to run as root). Password
    authentication (scram) on TCP only, no fsync (a test's data need not survive a power cut).
    It can be stopped and started again on the same port (a PostgreSQL restart). `.ci/run`
    installs it."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        if not bins:
            raise AssertionError("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)")
        self.bin = bins[-1].parent
        self.port, self.password = free_port(), secrets.token_hex(8)
        self.dir = Path(tempfile.mkdtemp(prefix="pm-postgres-"))  # not under pytest's root-only tmp
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self.user:
            shutil.chown(pwfile, self.user)
        auth = ["-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}"]
        self._run("initdb", "-D", str(self.dir / "data"), *auth)
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / tool), *args], user=self.user, capture_output=True, text=True, timeout=60, cwd=self.dir
        )
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = "pm_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
