"""Server-side PNG rendering of plotly figures with kaleido 1.x.

kaleido starts a Chrome per call unless its sync server runs; that server is one process for
the whole Python process and is not thread-safe, so it is started once, on first use (never at
import), and every render holds one lock.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import kaleido
from choreographer.browsers.chromium import Chromium

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Server-side PNG export needs Chrome or Chromium on this machine: "
    "`apt-get install -y chromium` (Debian/Ubuntu), or set BROWSER_PATH to a Chrome binary. "
    "The Export PNG buttons in the browser work without it."
)


class RendererUnavailable(RuntimeError):
    """No browser to render with; the message says how to install one."""


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido would use: $BROWSER_PATH if set, else choreographer's search."""
    path = os.environ.get("BROWSER_PATH") or Chromium.find_browser(skip_local=False)
    return path if path and Path(path).is_file() else None


class PngRenderer:
    def __init__(self):
        self._lock = threading.Lock()
        self._started = False

    def render(self, fig, width: int = 1200, height: int = 500, scale: float = 1.0) -> bytes:
        with self._lock:
            if not self._started:
                if find_browser() is None:
                    raise RendererUnavailable(INSTALL_HINT)
                try:
                    kaleido.start_sync_server(silence_warnings=True)
                except Exception as exc:  # choreographer's ChromeNotFoundError and friends
                    log.warning("kaleido could not start a browser: %s", exc)
                    raise RendererUnavailable(INSTALL_HINT) from exc
                self._started = True
            return kaleido.calc_fig_sync(fig, opts={"format": "png", "width": width, "height": height, "scale": scale})
