"""Digests the archive routes computed, kept in the server process so that a file is hashed
once while it is unchanged (the key names the file's version: its inode, times and size, or
a digest it is already known by)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import BinaryIO

from ..files.hashing import copy_hashing


class KeptDigests:
    """(size, SHA-256, CRC-32) of the files the routes hashed, by a key of each file's version,
    the least recently used dropped past ``limit`` entries."""

    def __init__(self, limit: int = 200_000):
        self.limit = limit
        self._known: OrderedDict[tuple, tuple[int, str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def of(
        self, key: tuple[Hashable, ...], open_file: Callable[[], BinaryIO]
    ) -> tuple[int, str, int]:
        """The digests of the file whose version ``key`` names, read through ``open_file``
        the first time. The key's first item names the file (:meth:`forget` drops by it)."""
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        with open_file() as handle:
            digests = copy_hashing(handle, None, with_crc32=True)
        with self._lock:
            self._known[key] = digests
            while len(self._known) > self.limit:
                self._known.popitem(last=False)
        return digests

    def of_local(self, path: Path, open_file: Callable[[], BinaryIO]) -> tuple[int, str, int]:
        """The digests of the local file at ``path``, keyed by its path, inode, modification
        and change times and size. The change time too: a file rewritten in place and given
        its old mtime back (cp -p, rsync --inplace -t) has a new ctime, which nothing can set
        back."""
        stat = os.stat(path)
        key = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        return self.of(key, open_file)

    def forget(self, name: str) -> None:
        """Drop what is kept for the file ``name`` (its bytes no longer match)."""
        with self._lock:
            for key in [key for key in self._known if key[0] == name]:
                del self._known[key]


#: The server process's digests, shared by every archive route it mounts.
KEPT = KeptDigests()

__all__ = ["KEPT", "KeptDigests"]
