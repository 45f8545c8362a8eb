"""The source link: which source the market reads, and how its REST host is reached.

It opens the source once, on first use (`auto` may probe the network, so never at import or
construction), follows the REST host the settings name, moves to the next fallback host after
an HTTP 451 (restricted location) and saves that choice, and keeps the symbols the exchange
says have stopped trading out of the polls while the other leg stays live.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from services.settings import AppConfig, SettingsStore, UserSettings
from services.sources import open_source

log = logging.getLogger(__name__)

SYMBOLS_TTL_S = 3_600
HALTED_RECHECK_S = 60


class SourceLink:
    def __init__(self, config: AppConfig, cache, settings_store: SettingsStore, clock=None, source=None, on_open=None):
        self.config = config
        self._on_open = on_open  # (source) -> None, once it is opened
        self.cache = cache
        self.settings_store = settings_store
        self._clock = clock
        self._source = source
        self._lock = threading.Lock()
        self.source_note = "source given by the caller" if source is not None else ""
        self.url_note = ""  # why the REST host changed, when it did
        self.halted: dict[str, str] = {}  # symbol -> why it is not polled (no longer trading)
        self._halted_checked = 0.0

    def source(self):
        """The source, opened on the first call."""
        if self._source is None:
            with self._lock:
                if self._source is None:
                    settings = self.settings_store.current()
                    self._source, self.source_note = open_source(
                        self.config.source,
                        self.wanted_host(settings),
                        clock=self._clock or time.time,
                        seed=self.config.sim_seed,
                        span_s=self.config.history_s,
                        replay=self.config.replay,
                        replay_speed=self.config.replay_speed,
                        fallback_urls=self.config.fallback_urls,
                        stream_url=self.config.stream_url,
                    )
                    client = self.client()
                    if client is not None and client.base_url != self.wanted_host(settings):
                        self.url_note = self.source_note  # the probe met a 451 and moved on: keep that host
                        self.settings_store.save(replace(settings, binance_url=client.base_url))
                    if self._on_open is not None:
                        self._on_open(self._source)
        return self._source

    def client(self):
        """The REST client of a Binance source (None for the simulation or a replay)."""
        return getattr(self.source(), "client", None)

    def host_in_use(self) -> str | None:
        client = self.client()
        return None if client is None else client.base_url

    def wanted_host(self, settings: UserSettings) -> str:
        """The REST host the settings ask for, if it is one the app may talk to (a row saved by an
        older version may name any host), else --binance-url."""
        wanted = settings.binance_url.rstrip("/")
        return wanted if wanted in self.config.rest_hosts() else self.config.binance_url.rstrip("/")

    def follow(self, settings: UserSettings, symbols) -> bool:
        """Talk to the REST host the settings name, about `symbols` (the watched ones); True when
        the host changed (errors start over)."""
        for sym in [s for s in self.halted if s not in symbols]:
            del self.halted[sym]
        client = self.client()
        want = self.wanted_host(settings)
        if client is None or client.base_url == want:
            return False
        log.info("REST host: %s -> %s", client.base_url, want)
        self.source().set_base_url(want)
        self.halted.clear()
        return True

    def leave_restricted_host(self) -> None:
        """After a 451, move to the next configured fallback host that has not answered 451 yet,
        and save it so that every worker and restart uses it."""
        client = self.client()
        if client is None:
            return
        restricted = client.base_url
        order = [u.rstrip("/") for u in (self.config.binance_url, *self.config.fallback_urls)]
        later = order[order.index(restricted) + 1 :] if restricted in order else order[1:]
        if later:
            url = later[0]
            self.url_note = f"{restricted} answered HTTP 451 (restricted location); switched to {url}"
            log.warning(self.url_note)
            self.settings_store.save(replace(self.settings_store.current(), binance_url=url))
            self.source().set_base_url(url)

    def _symbols_key(self) -> str:
        source = self.source()
        return f"symbols:{source.store_key or source.label}"  # one market, whichever way it is read

    def cached_symbols(self) -> list[str] | None:
        return self.cache.get(self._symbols_key())

    def fetch_symbols(self) -> list[str]:
        """Ask the source which symbols trade, and keep the answer for an hour. Raises BinanceError."""
        symbols = self.source().symbols()
        self.cache.set(self._symbols_key(), symbols, timeout=SYMBOLS_TTL_S)
        return symbols

    def recheck_due(self, now: float) -> bool:
        return bool(self.halted) and now - self._halted_checked >= HALTED_RECHECK_S

    def check_trading(self, pair, now: float) -> None:
        """Ask the exchange which symbols trade (a symbol can stop: delisting, a halt) and stop
        polling those of the pair that do not. Raises BinanceError."""
        self._halted_checked = now
        trading = set(self.fetch_symbols())
        label = self.source().label
        self.halted = {s: f"{s} is no longer trading on {label}" for s in pair if s not in trading}
        for why in self.halted.values():
            log.warning("%s; not polling it", why)

    def pollable(self, pair) -> list[str]:
        return [s for s in pair if s not in self.halted]
