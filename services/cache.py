"""The shared cache behind the once-per-interval poll guard.

flask-caching's FileSystemCache checks then writes in `add`, so two workers arriving at the
same moment can both "add" one key, and both would poll upstream. `AtomicFileSystemCache` makes
`add` create-if-absent with `os.link`, which the OS does atomically: exactly one caller wins,
also when several reclaim an expired key at once (a lease: services/stream.py).
Use it as `CACHE_TYPE="services.cache.AtomicFileSystemCache"`; RedisCache (SET NX) is atomic too.

Give it a threshold of 0: FileSystemCache then keeps no count file (which it would otherwise read
and rewrite on every write, several times a poll); instead, expired entries are swept once a
minute by whichever process writes.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time

from flask_caching.backends.filesystemcache import FileSystemCache


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
