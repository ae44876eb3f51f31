"""An incomplete (lazy) directory archive as a byte source (spec 4.1): the files present are
read from the directory; an absent one is fetched from the origin its manifest records when a
read needs it.

A file of at most :data:`WHOLE_LIMIT` bytes is fetched whole on its first read. A larger one is
fetched by range requests, only the blocks a read touches, into a partial file in the work
folder (:mod:`.work`); every answer is checked against the file's size and validators
(:mod:`.origin`). A file joins ``data/`` (one rename) only once it is whole and checked (its
SHA-256 when the manifest gives one), so a partly fetched file is never read as whole. What
was fetched and when it was last used is kept in the work folder, so nothing is fetched
twice, an interrupted fetch resumes, and a size cap drops the least recently used files.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from ...files.faults import crash_point
from ...files.space import out_of_space
from ...rules.names import FETCH_WORK_DIR
from ...rules.problems import ArchiveError
from .. import Member, PositionalRawIO, Span
from ..directory import DirectorySource
from .origin import Absent, Origin
from .work import BLOCK, WorkFolder

#: Files up to this size are fetched whole on their first read.
WHOLE_LIMIT = 1 << 20
#: The read buffer of an absent file opened for reading.
READ_BUFFER = 8 << 10

#: Told of every file fetched whole and checked: the file, where it now is, its SHA-256,
#: CRC-32 and the origin's validators (ETag, Last-Modified).
FetchedHook = Callable[[Absent, Path, str, int, tuple[str | None, str | None]], None]


@dataclass(frozen=True)
class FetchPolicy:
    """Whether a lazy archive may contact its origin, and how.

    ``why_not`` is the reason given when it may not (offline, or an archive this user's
    download did not make); ``api_key`` goes to the origin alone; ``max_bytes`` caps the
    bytes fetched files and blocks take (least recently used dropped first; None: no cap).
    """

    enabled: bool
    why_not: str = ""
    api_key: str | None = None
    max_bytes: int | None = None
    #: Whether the work folder is this user's (its partial files read); one that came with
    #: an archive made elsewhere is never read.
    own_work: bool = True


class LazySource(DirectorySource):
    """A directory archive whose listed-but-absent files are fetched when read (spec 4.1).

    ``listed`` is every file the fetch record lists (those present are read from the
    directory); ``node_hint(path)`` names the ``tiled-archive fetch`` command that would bring
    a file, for the error a read of it gets when fetching is off; ``on_fetched`` is told of
    each file fetched whole.
    """

    def __init__(
        self,
        root: Path,
        listed: Iterable[Absent],
        policy: FetchPolicy,
        origin_url: str,
        node_hint: Callable[[str], str],
        on_fetched: FetchedHook | None = None,
    ):
        super().__init__(root)
        self.policy = policy
        self._origin_url = origin_url
        self._node_hint = node_hint
        self._on_fetched = on_fetched
        self._listed: dict[str, Absent] = {}
        self._absent: dict[str, Absent] = {}
        self._all = dict(self._members)
        self._origin: Origin | None = None
        self._work: WorkFolder | None = None
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._touched: set[str] = set()
        self.extend(listed)

    def extend(self, listed: Iterable[Absent]) -> None:
        """Add files the fetch record lists (a mirror that grew): present ones are read from
        the directory, the others are absent."""
        with self._guard:
            for file in listed:
                if file.path in self._listed:
                    continue
                self._listed[file.path] = file
                target = self._target(file.path)
                if file.path in self._members or (target.is_file() and not target.is_symlink()):
                    self._members[file.path] = Member(file.path, target.stat().st_size)
                else:
                    self._absent[file.path] = file
                    self._all[file.path] = Member(file.path, file.size)
            self._all.update(self._members)  # and files rewritten in place (a mirror's tags)

    # -- What is here ------------------------------------------------------------------------

    def members(self) -> Mapping[str, Member]:
        return MappingProxyType(self._all)

    def absent(self) -> dict[str, Absent]:
        """The listed files not present (yet), by archive path."""
        return dict(self._absent)

    def listed(self) -> dict[str, Absent]:
        """Every file the fetch record lists, present or not."""
        return dict(self._listed)

    def is_present(self, path: str) -> bool:
        return path not in self._absent

    @property
    def origin(self) -> Origin | None:
        """The origin client, once a fetch made one (tests and benchmarks count its bytes)."""
        return self._origin

    # -- ByteSource --------------------------------------------------------------------------

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        if path not in self._listed:
            return super().read(path, offset, size)
        total = self._all[path].size
        size = max(0, total - offset) if size is None else max(0, min(size, total - offset))
        buffer = bytearray(size)
        count = self.read_into(path, offset, memoryview(buffer))
        return bytes(buffer[:count])

    def read_into(self, path: str, offset: int, buffer: memoryview) -> int:
        if path not in self._listed:  # tag files, files read through the data API: here
            return self._read_here(path, offset, buffer)
        before = self._received()
        with self._file_lock(path):  # the size cap drops no file while it is read
            file = self._absent.get(path)
            if file is None:
                self._touch(path)
                return self._read_here(path, offset, buffer)
            size = max(0, min(len(buffer), file.size - offset))
            if size == 0:
                return 0
            with self._disk_full_coded(file):
                if file.size <= WHOLE_LIMIT or not self._may_range(file):
                    self._bring(file)
                    partial = None
                else:
                    partial = self._ranged(file, offset, offset + size)  # None: it became whole
            if partial is None:
                count = self._read_here(path, offset, buffer)
            else:
                fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    count = os.preadv(fd, [buffer[:size]], offset)
                finally:
                    os.close(fd)
        if self._received() != before:
            self._within_budget(keep=path)
        return count

    def _read_here(self, path: str, offset: int, buffer: memoryview) -> int:
        """A present file's bytes, from the directory."""
        data = DirectorySource.read(self, path, offset, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def open(self, path: str) -> BinaryIO:
        if path not in self._absent:
            self._touch(path)
            return super().open(path)
        # A small buffer: a library's small reads far apart (an HDF5 chunk index) must not
        # each become a 64 KiB read that can straddle two blocks.
        raw = PositionalRawIO(partial(self.read_into, path), self._all[path].size, path)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def span(self, path: str) -> Span | None:
        return None if path in self._absent else super().span(path)

    def close(self) -> None:
        if self._origin is not None:
            self._origin.close()
        if self._work is not None:
            self._work.close()

    # -- Fetching ----------------------------------------------------------------------------

    def ensure(self, path: str) -> int:
        """Make listed file ``path`` present (fetched, checked, renamed into place); the
        bytes the origin sent meanwhile (other threads' fetches included; 0 when it was
        present)."""
        file = self._absent.get(path)
        if file is None:
            return 0
        before = self._received()
        with self._file_lock(path), self._disk_full_coded(file):
            if path in self._absent:
                self._bring(file)
        fetched = self._received() - before
        if fetched:
            self._within_budget(keep=path)  # with no file lock held: it takes others'
        return fetched

    def _bring(self, file: Absent) -> None:
        """Fetch ``file`` whole, or all its missing blocks, and place it (its lock held)."""
        self._allowed(file)
        if file.size > WHOLE_LIMIT and self._may_range(file):
            self._ranged(file, 0, file.size)
            return
        work = self._work_folder()
        with work.locked(file.path):
            if self._placed_meanwhile(file):
                return
            with work.whole(self._origin_client(), file) as (fetched, sha, crc, validators):
                self._place(file, fetched, sha, crc, validators)

    @contextlib.contextmanager
    def _disk_full_coded(self, file: Absent) -> Iterator[None]:
        """A full disk while ``file`` is fetched (its lock held): TA-E906 naming where it goes,
        its partial blocks dropped (what filled the disk is nothing to resume from)."""
        try:
            yield
        except BaseException as err:
            full = out_of_space(err, self._target(file.path))
            if full is None:
                raise
            with contextlib.suppress(OSError, sqlite3.Error):
                self._work_folder().forget(file.path)
            raise full from None

    def _placed_meanwhile(self, file: Absent) -> bool:
        """Whether another process placed ``file`` (checked there) while this one waited for
        its lock: then it is present here too."""
        target = self._target(file.path)
        if target.is_file() and not target.is_symlink() and target.stat().st_size == file.size:
            self._present(file)
            return True
        return False

    def _received(self) -> int:
        return self._origin.received if self._origin is not None else 0

    def ensure_below(self, prefix: str) -> None:
        """Make every listed file at or below ``prefix`` present (a directory asset)."""
        for path in sorted(self._absent):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                self.ensure(path)

    def drop(self, paths: Iterable[str]) -> int:
        """Remove listed files (and their partial blocks) again: absent, fetched when next
        read. The bytes freed."""
        freed = 0
        work = self._work_folder()
        for path in paths:
            file = self._listed.get(path)
            if file is None:
                continue
            with self._file_lock(path):
                if path not in self._absent:
                    with contextlib.suppress(FileNotFoundError):
                        target = self._target(path)
                        freed += target.stat().st_size
                        target.unlink()
                    self._members.pop(path, None)
                    self._absent[path] = file
                    self._all[path] = Member(path, file.size)
                freed += len(work.blocks(path)) * BLOCK
                work.forget(path)
                work.unrecord(path)
        return freed

    def _allowed(self, file: Absent) -> None:
        if not self.policy.enabled:
            raise ArchiveError(
                "TA-E941",
                file.path,
                f"not in the archive yet, and {self.policy.why_not}",
                hint=f"Run `{self._node_hint(file.path)}` (online) to bring it.",
            )

    def _may_range(self, file: Absent) -> bool:
        if not self.policy.enabled:
            return True  # blocks fetched before are read; a missing one is TA-E941
        return self._work_folder().may_range(file)

    def _ranged(self, file: Absent, start: int, end: int) -> Path | None:
        """Fetch the blocks of ``[start, end)`` the partial file lacks (blocks fetched before
        are read offline too); when that makes it whole, check it and move it into place
        (None); else the partial file's path. Its lock is held (an RLock: taken again here)."""
        with self._file_lock(file.path):
            if file.path not in self._absent:
                return None
            work = self._work_folder() if self.policy.enabled else self._existing_work()
            have = work.blocks(file.path) if work is not None else set()
            wanted = range(start // BLOCK, (end - 1) // BLOCK + 1)
            missing = [block for block in wanted if block not in have]
            # Every block held but the file not placed: a run stopped between its last block
            # and the rename (placed now, when this reader may write).
            unplaced = not missing and self.policy.enabled and len(have) >= -(-file.size // BLOCK)
            if missing or unplaced:
                self._allowed(file)
                assert work is not None
                with work.locked(file.path):  # another process may be filling it
                    held = work.blocks(file.path)
                    if not held and self._placed_meanwhile(file):
                        return None  # by another process, which held the lock
                    missing = [block for block in wanted if block not in held]
                    if missing:
                        work.fetch_blocks(self._origin_client(), file, missing)
                    if work.is_whole(file):
                        self._place(file, *work.finished(file))
                        work.forget(file.path)
                        return None
            assert work is not None
            return work.partial_path(file.path)

    def _place(
        self, file: Absent, fetched: Path, sha256: str, crc32: int, validators: Absent
    ) -> None:
        """Rename a whole, checked file into ``data/`` (folders made without following
        links), record it, and tell the hook."""
        folder = Path(self._root)
        for part in file.path.split("/")[:-1]:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            if folder.is_symlink() or not folder.is_dir():
                raise ArchiveError("TA-E203", file.path, "a symlink or file is on its path")
        target = self._target(file.path)
        os.chmod(fetched, 0o644)
        crash_point("fetch:received")
        os.replace(fetched, target)
        crash_point("fetch:placed")
        self._work_folder().record(file, sha256)
        self._present(file)
        if self._on_fetched is not None:
            with contextlib.suppress(OSError, sqlite3.Error):  # a cache is a nicety here
                pair = (validators.etag, validators.last_modified)
                self._on_fetched(file, target, sha256, crc32, pair)

    def _present(self, file: Absent) -> None:
        with self._guard:
            self._members[file.path] = Member(file.path, file.size)
            self._all[file.path] = self._members[file.path]
            self._absent.pop(file.path, None)

    def _within_budget(self, keep: str) -> None:
        """Drop least recently used fetched files until the cap holds (never ``keep``).
        Called with no file lock held: each drop waits for reads of its file to end."""
        cap = self.policy.max_bytes
        if cap is None:
            return
        work = self._work_folder()
        for path in work.least_recent():
            if work.used_bytes() <= cap:
                return
            if path != keep:
                self.drop([path])

    def _touch(self, path: str) -> None:
        """Mark a fetched file used (once per open archive: the size cap's order)."""
        if path in self._touched or path not in self._listed or self._work is None:
            return
        self._touched.add(path)
        self._work.touch(path)

    def _origin_client(self) -> Origin:
        with self._guard:
            if self._origin is None:
                self._origin = Origin(self._origin_url, self.policy.api_key)
            return self._origin

    def _work_folder(self) -> WorkFolder:
        with self._guard:
            if self._work is None:
                self._work = WorkFolder(Path(self._root, FETCH_WORK_DIR))
            return self._work

    def _existing_work(self) -> WorkFolder | None:
        """The work folder when there is one and it is this user's (offline: nothing is
        created)."""
        if not self.policy.own_work:
            return None
        if self._work is None and not Path(self._root, FETCH_WORK_DIR).is_dir():
            return None
        return self._work_folder()

    def _file_lock(self, path: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(path, threading.RLock())

    def _target(self, path: str) -> Path:
        return Path(self._root, *path.split("/"))


__all__ = ["BLOCK", "WHOLE_LIMIT", "Absent", "FetchPolicy", "FetchedHook", "LazySource", "Origin"]
