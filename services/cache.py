"""The shared cache behind the once-per-interval poll guard.

flask-caching's FileSystemCache checks then writes in `add`, so two workers arriving at the
same moment can both "add" one key, and both would poll upstream. `AtomicFileSystemCache` makes
`add` create-if-absent with `os.link`, which the OS does atomically: exactly one caller wins.
Use it as `CACHE_TYPE="services.cache.AtomicFileSystemCache"`; RedisCache (SET NX) is atomic too.
"""

from __future__ import annotations

import os
import struct
import tempfile

from flask_caching.backends.filesystemcache import FileSystemCache


class AtomicFileSystemCache(FileSystemCache):
    def add(self, key, value, timeout=None) -> bool:
        filename = self._get_filename(key)
        if os.path.exists(filename):
            if self.has(key):
                return False
            # Expired: clear it. (Two workers reclaiming the same expired key could both win; the
            # poll guard never reuses a key, so this does not arise there.)
            self.delete(key)
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
