"""DESIGN.md's structural invariants: layering, cheap import, the CLI."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_service_module_imports_dash():
    for path in (ROOT / "services").glob("*.py"):
        assert not imported_modules(path) & {"dash", "dash_bootstrap_components", "dash_ag_grid"}, path.name


def test_components_do_not_touch_data_or_services_state():
    for path in (ROOT / "components").glob("*.py"):
        assert "market" not in path.read_text(), f"{path.name} must stay a pure builder"


def test_pages_do_not_import_the_app():
    for path in (ROOT / "pages").glob("*.py"):
        assert "app" not in imported_modules(path), path.name


def test_import_is_cheap_and_starts_no_thread():
    code = (
        "import threading, time; t = time.time(); import app; "
        "assert threading.active_count() == 1, threading.enumerate(); print(time.time() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 10


def test_cli_help_documents_every_option():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag, env in [
        ("--source", "SOURCE"),
        ("--binance-url", "BINANCE_BASE_URL"),
        ("--host", "HOST"),
        ("--port", "PORT"),
        ("--data-dir", "DATA_DIR"),
        ("--debug", "DEBUG"),
    ]:
        assert flag in out.stdout and env in out.stdout
    assert "127.0.0.1" in out.stdout and "8050" in out.stdout


def test_env_twins_configure_the_app(monkeypatch):
    import app

    cfg, run = app.parse_args([], environ={"SOURCE": "sim", "PORT": "9001", "DATA_DIR": "/tmp/x", "DEBUG": "0"})
    assert (cfg.source, cfg.port, cfg.data_dir, cfg.debug, cfg.host) == ("sim", 9001, "/tmp/x", False, "127.0.0.1")
    assert run == app.Run() and cfg.fallback_urls == ("https://data-api.binance.vision",)
    assert app.parse_args(["--port", "9002"], environ={"PORT": "9001"})[0].port == 9002
    cfg, run = app.parse_args(["--collector"], environ={"BINANCE_FALLBACK_URLS": "http://a.test, http://b.test"})
    assert run.collector and cfg.fallback_urls == ("http://a.test", "http://b.test")


def test_bad_urls_stop_at_start_with_a_clear_error(capsys):
    import app

    with pytest.raises(SystemExit):
        app.parse_args(["--fallback-urls", "ftp://x"], environ={})
    assert "http:// or https://" in capsys.readouterr().err


def test_replay_with_a_broken_file_stops_at_start_with_a_clear_error(tmp_path):
    bad = tmp_path / "ETHUSDT-1m-2025-10-22.csv"
    bad.write_text("open_time,close\nnot,numbers\n")
    out = subprocess.run(
        [
            sys.executable,
            "app.py",
            "--source",
            "replay",
            "--replay",
            str(tmp_path / "BTCUSDT-1m-x.csv"),
            str(bad),
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "BTCUSDT-1m-x.csv: cannot read" in out.stderr and "Traceback" not in out.stderr
