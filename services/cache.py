"""The cache every process shares: the poll guard, the Retry-After window, the shared ticks, the
stream lease and its batches, the scans. Two backends, both through flask-caching's API:

- **The file cache** under the data dir (the default: one machine, nothing to set up).
  flask-caching's FileSystemCache checks then writes in `add`, so two workers arriving at the
  same moment could both "add" one key, and both would poll upstream. `AtomicFileSystemCache`
  makes `add` create-if-absent with `os.link`, which the OS does atomically: exactly one caller
  wins, also when several reclaim an expired key at once (a lease: services/stream.py).
  It runs with a threshold of 0: FileSystemCache then keeps no count file (which it would
  otherwise read and rewrite on every write, several times a poll); instead, expired entries
  are swept once a minute by whichever process writes.
- **Redis** (`--cache-url redis://host:port/db`), shared by every host. Its `add` is one SET NX EX.
  While Redis does not answer, each host carries on with its data dir's file cache
  (`FailoverCache`): it polls and streams on its own, and joins the others again when Redis
  answers.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
import time

import redis
from cachelib import BaseCache
from flask_caching.backends.filesystemcache import FileSystemCache
from flask_caching.backends.rediscache import RedisCache

from services import metrics
from services.settings import shown_url
from services.sources import iso_utc

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5  # a Redis that does not answer within this is down (the file cache takes over)
REDIS_RETRY_S = 2.0  # while it is down, Redis is asked again this often (off the request path)
KEY_PREFIX = "pairmonitor:"  # a Redis shared with other applications: this app's keys are its own


class AtomicFileSystemCache(FileSystemCache):
    SWEEP_EVERY_S = 60

    _last_sweep = 0.0

    def _sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep >= self.SWEEP_EVERY_S:
            self._last_sweep = now
            self._remove_expired(now)

    def set(self, key, value, timeout=None, mgmt_element: bool = False) -> bool:
        self._sweep()
        return super().set(key, value, timeout, mgmt_element)

    def add(self, key, value, timeout=None) -> bool:
        self._sweep()
        filename = self._get_filename(key)
        if os.path.exists(filename) and (self.has(key) or not self._retire_expired(filename)):
            return False
        fd, tmp = tempfile.mkstemp(suffix=self._fs_transaction_suffix, dir=self._path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(struct.pack("I", self._normalize_timeout(timeout)))
                self.serializer.dump(value, f)
            os.link(tmp, filename)
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
        self._update_count(delta=1)
        return True

    def _retire_expired(self, filename: str) -> bool:
        """Move an expired entry aside, so that of the processes reclaiming it at once (a lease
        that ran out) exactly one then creates it: the move succeeds for one of them, and the
        `os.link` that follows for one. False when the entry moved was fresh after all (another
        process had just made it anew): it is put back."""
        aside = f"{filename}.{os.getpid()}.{time.monotonic_ns()}.expired"
        try:
            os.rename(filename, aside)
        except FileNotFoundError:
            return True  # another process moved it first; the link decides
        try:
            with open(aside, "rb") as f:
                expires = struct.unpack("I", f.read(4))[0]
            if expires == 0 or expires >= time.time():
                os.link(aside, filename)  # (fails if a third process made it meanwhile: it stands)
                return False
            return True
        except (OSError, struct.error):
            return False
        finally:
            os.remove(aside)


class RedisSharedCache(RedisCache):
    """flask-caching's RedisCache with an atomic `add`: cachelib's is SETNX then EXPIRE, and a
    process that died between the two would leave a key that never expires (a lease held forever)."""

    def add(self, key, value, timeout=None) -> bool:
        ttl = self._normalize_timeout(timeout)
        dump = self.serializer.dumps(value)
        ex = None if ttl == -1 else ttl
        return bool(self._write_client.set(f"{self._get_prefix()}{key}", dump, nx=True, ex=ex))


class FailoverCache(BaseCache):
    """Redis while it answers; this host's file cache while it does not. A failed call is not
    retried on the request path: a thread asks Redis every REDIS_RETRY_S until it answers."""

    def __init__(self, primary: BaseCache, local: BaseCache, url: str, ping):
        super().__init__()
        self.primary, self.local, self.url = primary, local, shown_url(url)
        self.ping = ping  # () -> raises redis.RedisError while Redis does not answer
        self.down_since: float | None = None  # wall time of the first failure of this outage
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def _call(self, name: str, *args):
        if self.down_since is None:
            try:
                return getattr(self.primary, name)(*args)
            except redis.RedisError as exc:
                self._failed(exc)
        return getattr(self.local, name)(*args)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            if self.down_since is not None:
                return
            self.down_since = time.time()
        metrics.CACHE_FAILOVERS.inc()
        log.warning("Redis at %s does not answer (%s): this host carries on with its own cache", self.url, exc)
        threading.Thread(target=self._wait_for_redis, name="redis-retry", daemon=True).start()

    def _wait_for_redis(self) -> None:
        while True:
            time.sleep(REDIS_RETRY_S)
            try:
                self.ping()
            except redis.RedisError as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                continue
            with self._lock:
                self.down_since = None
            log.info("Redis at %s answers again: shared with the other hosts once more", self.url)
            return

    def get(self, key):
        return self._call("get", key)

    def set(self, key, value, timeout=None):
        return self._call("set", key, value, timeout)

    def add(self, key, value, timeout=None):
        return self._call("add", key, value, timeout)

    def delete(self, key):
        return self._call("delete", key)

    def has(self, key):
        return self._call("has", key)

    def state(self) -> dict:
        down = self.down_since
        return {
            "backend": "redis",
            "url": self.url,
            "up": down is None,
            "down_since_utc": None if down is None else iso_utc(down),
            "last_error": self.last_error,
        }


def open_shared_cache(cache_url: str, cache_dir: str) -> BaseCache:
    """The file cache under `cache_dir`, or Redis at `cache_url` with that file cache for the
    times it does not answer. Opening connects to nothing."""
    local = AtomicFileSystemCache(cache_dir, threshold=0)
    if not cache_url:
        return local
    client = redis.Redis.from_url(cache_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    return FailoverCache(RedisSharedCache(host=client, key_prefix=KEY_PREFIX), local, cache_url, client.ping)


def shared_cache(_app, config: dict, _args, _kwargs) -> BaseCache:
    """flask-caching's factory for `CACHE_TYPE="services.cache.shared_cache"` (CACHE_URL, CACHE_DIR)."""
    return open_shared_cache(config.get("CACHE_URL") or "", config["CACHE_DIR"])


def cache_state(cache) -> dict:
    """What /api/health says about the shared cache (`cache`: the backend or flask-caching's Cache)."""
    backend = getattr(cache, "cache", cache)
    if isinstance(backend, FailoverCache):
        return backend.state()
    return {"backend": "file", "up": True}
