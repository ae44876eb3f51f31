"""An incomplete (lazy) directory archive as a byte source (spec 4.1): the files present are
read from the directory; an absent one is fetched from the origin its manifest records when a
read needs it.

A file of at most :data:`WHOLE_LIMIT` bytes is fetched whole on its first read. A larger one is
fetched by range requests, only the :data:`BLOCK` s a read touches, into a partial file in the
work folder (``.tiled-archive-fetch/``); every answer is checked against the file's recorded
size and validators. The file joins ``data/`` (one rename) only once it is whole and checked
(its SHA-256 when the manifest gives one), so a partly fetched file is never read as whole.
What was fetched, when it was last used, and the digests learned, are kept in the work
folder's ``state.db`` (SQLite), so that nothing is fetched twice, an interrupted fetch
resumes, and a size cap can drop the least recently used files again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import httpx

from ..rules.names import FETCH_WORK_DIR
from ..rules.problems import ArchiveError
from . import ByteSource, Member, Span
from .directory import DirectorySource

#: Files up to this size are fetched whole on their first read.
WHOLE_LIMIT = 1 << 20
#: The block of a larger file's range reads (an HDF5 read of one frame moves about the frame).
BLOCK = 256 << 10
#: The most one range request asks for (``fetch`` of a large file: resumable in steps).
RUN = 16 << 20
#: Attempts of one request on a connection error or a 5xx answer.
ATTEMPTS = 3

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class Absent:
    """A file the fetch record lists: its size, digest (None: unknown), address and the
    validators recorded for it."""

    path: str
    size: int
    sha256: str | None
    url: str
    etag: str | None = None
    last_modified: str | None = None


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


class Origin:
    """The one server an archive's absent files come from: no redirect is followed, the API
    key goes to it alone, every answer is checked before a byte of it is kept."""

    def __init__(self, base: str, api_key: str | None):
        self.base = base
        headers = {"Accept-Encoding": "identity"}
        if api_key:
            headers["Authorization"] = f"Apikey {api_key}"
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(30.0), follow_redirects=False
        )
        #: Requests made and body bytes received (tests and benchmarks count them).
        self.requests = 0
        self.received = 0

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def get(self, file: Absent, start: int | None, end: int | None) -> Iterator[httpx.Response]:
        """The open answer to a GET of ``file`` (bytes ``start..end`` inclusive, or whole),
        checked: a 2xx of the right size and validators. Retried on connection errors and
        5xx answers."""
        headers = {} if start is None else {"Range": f"bytes={start}-{end}"}
        url = self.base + file.url
        for attempt in range(ATTEMPTS):
            self.requests += 1
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 500 and attempt + 1 < ATTEMPTS:
                        time.sleep(0.2 * 2**attempt)
                        continue
                    self._check(file, response, start, end)
                    yield response
                    return
            except httpx.TransportError as err:
                if attempt + 1 < ATTEMPTS:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise ArchiveError(
                    "TA-E943", url, f"cannot reach the origin: {type(err).__name__}: {err}"
                ) from None

    def _check(
        self, file: Absent, response: httpx.Response, start: int | None, end: int | None
    ) -> None:
        url = self.base + file.url
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            raise ArchiveError(
                "TA-E943", url, f"the origin redirects ({status}) to {where}; not followed"
            )
        if status in (401, 403):
            raise ArchiveError("TA-E943", url, f"the origin refused the request ({status})")
        if status in (404, 410, 416):
            raise ArchiveError(
                "TA-E942", file.path, f"the origin no longer has the file ({status} at {url})"
            )
        if status not in (200, 206):
            raise ArchiveError("TA-E943", url, f"the origin answered {status}")
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ArchiveError("TA-E943", url, f"an answer with Content-Encoding: {encoding}")
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None:
                raise ArchiveError("TA-E943", url, "a 206 answer without a usable Content-Range")
            first, last, total = (int(group) for group in match.groups())
            if (first, last) != (start, end):
                raise ArchiveError(
                    "TA-E943", url, f"asked for bytes {start}-{end}, got {first}-{last}"
                )
        else:
            if start is not None and (start, end) != (0, file.size - 1):
                raise ArchiveError("TA-E943", url, "the origin ignores Range (a whole 200)")
            total = int(response.headers.get("content-length", file.size))
        if total != file.size:
            raise ArchiveError(
                "TA-E942", file.path, f"the origin's file has {total} bytes, {file.size} listed"
            )
        for name, recorded in (("etag", file.etag), ("last-modified", file.last_modified)):
            given = response.headers.get(name)
            if recorded is not None and given is not None and given != recorded:
                raise ArchiveError(
                    "TA-E942",
                    file.path,
                    f"changed at the origin: {name} {given}, recorded {recorded}",
                )


class FetchState:
    """The work folder's ``state.db``: blocks of partial files, files fetched (size, digest,
    last use), the validators each partial file was begun with."""

    def __init__(self, folder: Path):
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "state.db", timeout=60, check_same_thread=False)
        with self._lock, self._db:
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS block (path TEXT, block INTEGER,"
                " PRIMARY KEY (path, block));"
                "CREATE TABLE IF NOT EXISTS partial (path TEXT PRIMARY KEY, etag TEXT,"
                " last_modified TEXT, used REAL);"
                "CREATE TABLE IF NOT EXISTS fetched (path TEXT PRIMARY KEY, size INTEGER,"
                " sha256 TEXT, used REAL);"
            )

    def sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock, self._db:
            return self._db.execute(statement, args).fetchall()

    def add_blocks(self, path: str, blocks: Iterable[int]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO block VALUES (?, ?)", [(path, b) for b in blocks]
            )

    def blocks(self, path: str) -> set[int]:
        return {row[0] for row in self.sql("SELECT block FROM block WHERE path = ?", path)}

    def digests(self) -> dict[str, str]:
        """SHA-256 of every file fetched whole and checked, by archive path."""
        return dict(self.sql("SELECT path, sha256 FROM fetched"))

    def used_bytes(self) -> int:
        files = self.sql("SELECT coalesce(sum(size), 0) FROM fetched")[0][0]
        blocks = self.sql("SELECT count(*) FROM block")[0][0]
        return files + blocks * BLOCK

    def least_recent(self) -> list[tuple[str, bool]]:
        """Fetched files and partial files, least recently used first: (path, is_partial)."""
        rows = self.sql(
            "SELECT path, used, 0 FROM fetched UNION ALL SELECT path, used, 1 FROM partial "
            "ORDER BY 2"
        )
        return [(path, bool(partial)) for path, _, partial in rows]

    def close(self) -> None:
        self._db.close()


#: Told of every file fetched whole and checked: the file, where it now is, its SHA-256,
#: CRC-32 and the origin's validators (ETag, Last-Modified).
FetchedHook = Callable[[Absent, Path, str, int, tuple[str | None, str | None]], None]


class LazySource(DirectorySource):
    """A directory archive whose listed-but-absent files are fetched when read (spec 4.1).

    ``absent`` is every file the fetch record lists (those present are read from the
    directory); ``node_hint(path)`` names the ``tiled-archive fetch`` command that would bring
    a file, for the error a read of it gets when fetching is off.
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
        self._on_fetched = on_fetched
        self.policy = policy
        self._origin_url = origin_url
        self._node_hint = node_hint
        self._listed = {file.path: file for file in listed}
        self._absent = {p: f for p, f in self._listed.items() if p not in self._members}
        self._all = dict(self._members)
        self._all.update((p, Member(p, f.size)) for p, f in self._absent.items())
        self._origin: Origin | None = None
        self._state: FetchState | None = None
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._touched: set[str] = set()

    def extend(self, listed: Iterable[Absent]) -> None:
        """Add files the fetch record lists now (a mirror that grew): present ones are found
        in the directory, the others absent."""
        with self._guard:
            for file in listed:
                if file.path in self._listed:
                    continue
                self._listed[file.path] = file
                target = self._target(file.path)
                if target.is_file() and not target.is_symlink():
                    self._members[file.path] = Member(file.path, target.stat().st_size)
                    self._all[file.path] = self._members[file.path]
                else:
                    self._absent[file.path] = file
                    self._all[file.path] = Member(file.path, file.size)
            for path in self._members:  # the tag files and catalog, rewritten in place
                self._all[path] = self._members[path]

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
        if path not in self._absent:
            self._touch(path)
            return super().read(path, offset, size)
        total = self._all[path].size
        size = max(0, total - offset) if size is None else max(0, min(size, total - offset))
        buffer = bytearray(size)
        count = self.read_into(path, offset, memoryview(buffer))
        return bytes(buffer[:count])

    def read_into(self, path: str, offset: int, buffer: memoryview) -> int:
        file = self._absent.get(path)
        if file is None:
            self._touch(path)
            return super().read_into(path, offset, buffer)
        size = max(0, min(len(buffer), file.size - offset))
        if size == 0:
            return 0
        if file.size <= WHOLE_LIMIT or not self._may_range(file):
            self.ensure(path)
            return super().read_into(path, offset, buffer)
        partial = self._ranged(file, offset, offset + size)
        if partial is None:  # it became whole meanwhile
            return super().read_into(path, offset, buffer)
        fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.preadv(fd, [buffer[:size]], offset)
        finally:
            os.close(fd)

    def open(self, path: str) -> BinaryIO:
        if path not in self._absent:
            self._touch(path)
            return super().open(path)
        return ByteSource.open(self, path)

    def span(self, path: str) -> Span | None:
        return None if path in self._absent else super().span(path)

    def close(self) -> None:
        if self._origin is not None:
            self._origin.close()
        if self._state is not None:
            self._state.close()

    # -- Fetching ----------------------------------------------------------------------------

    def ensure(self, path: str) -> int:
        """Make listed file ``path`` present (fetched whole, checked, renamed into place);
        the bytes fetched (0 when it was present)."""
        file = self._absent.get(path)
        if file is None:
            return 0
        with self._file_lock(path):
            if path not in self._absent:
                return 0
            self._allowed(file)
            if file.size > WHOLE_LIMIT and self._may_range(file):
                before = self._origin_bytes()
                self._ranged(file, 0, file.size)
                return self._origin_bytes() - before
            return self._whole(file)

    def ensure_below(self, prefix: str) -> None:
        """Make every listed file at or below ``prefix`` present (a directory asset)."""
        for path in sorted(self._absent):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                self.ensure(path)

    def drop(self, paths: Iterable[str]) -> int:
        """Remove listed files (and their partial blocks) again: absent, fetched when next
        read. The bytes freed."""
        freed = 0
        state = self._fetch_state()
        for path in paths:
            file = self._listed.get(path)
            if file is None:
                continue
            with self._file_lock(path):
                if path not in self._absent:
                    target = self._target(path)
                    with contextlib.suppress(FileNotFoundError):
                        freed += target.stat().st_size
                        target.unlink()
                    self._members.pop(path, None)
                    self._absent[path] = file
                    self._all[path] = Member(path, file.size)
                freed += len(state.blocks(path)) * BLOCK
                self._forget_partial(path)
                state.sql("DELETE FROM fetched WHERE path = ?", path)
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
        """Blocks of one file fetched at different times are one file only when validators
        say so: recorded ones, or those the first answer gave (kept with the partial file).
        A file whose first answer gave none is fetched whole."""
        if file.etag or file.last_modified or not self.policy.enabled:
            return True
        rows = self._fetch_state().sql(
            "SELECT etag, last_modified FROM partial WHERE path = ?", file.path
        )
        return not rows or bool(rows[0][0] or rows[0][1])

    def _ranged(self, file: Absent, start: int, end: int) -> Path | None:
        """Fetch the blocks of ``[start, end)`` the partial file lacks (blocks fetched before
        are read offline too); when that makes it whole, check it and move it into place
        (None); else the partial file's path."""
        with self._file_lock(file.path):
            if file.path not in self._absent:
                return None
            state = self._fetch_state() if self.policy.enabled else self._existing_state()
            partial = self._partial_path(file.path)
            have = state.blocks(file.path) if state is not None and partial.exists() else set()
            wanted = range(start // BLOCK, (end - 1) // BLOCK + 1)
            missing = [b for b in wanted if b not in have]
            if not missing:
                return partial
            self._allowed(file)
            assert state is not None
            if not have:
                self._forget_partial(file.path)
                with open(partial, "wb") as sink:
                    sink.truncate(file.size)
            recorded = self._validators(file, state)
            for first, last in _runs(missing):
                self._fetch_blocks(recorded, partial, first, last, state)
            state.sql("UPDATE partial SET used = ? WHERE path = ?", time.time(), file.path)
            if len(state.blocks(file.path)) == -(-file.size // BLOCK):
                self._complete(file, partial, state)
                return None
        self._within_budget(keep=file.path)
        return partial

    def _validators(self, file: Absent, state: FetchState) -> Absent:
        """``file`` with the validators its partial file was begun with (recorded ones, or
        the first answer's), so every block is checked against the same."""
        rows = state.sql("SELECT etag, last_modified FROM partial WHERE path = ?", file.path)
        if rows:
            etag, modified = rows[0]
            return dataclasses.replace(
                file, etag=file.etag or etag, last_modified=file.last_modified or modified
            )
        return file

    def _fetch_blocks(
        self, file: Absent, partial: Path, first: int, last: int, state: FetchState
    ) -> None:
        origin = self._origin_client()
        for run_first in range(first, last + 1, RUN // BLOCK):
            run_last = min(last, run_first + RUN // BLOCK - 1)
            start, end = run_first * BLOCK, min(file.size, (run_last + 1) * BLOCK) - 1
            with origin.get(file, start, end) as response, open(partial, "r+b") as sink:
                sink.seek(start)
                received = 0
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if received > end - start + 1:
                        raise ArchiveError("TA-E943", origin.base + file.url, "a longer answer")
                    sink.write(chunk)
                origin.received += received
                if received != end - start + 1:
                    raise ArchiveError(
                        "TA-E943", origin.base + file.url, f"{received} bytes of {end - start + 1}"
                    )
                if not state.sql("SELECT 1 FROM partial WHERE path = ?", file.path):
                    state.sql(
                        "INSERT INTO partial VALUES (?, ?, ?, ?)",
                        file.path,
                        response.headers.get("etag"),
                        response.headers.get("last-modified"),
                        time.time(),
                    )
                    file = self._validators(file, state)
            state.add_blocks(file.path, range(run_first, run_last + 1))

    def _complete(self, file: Absent, partial: Path, state: FetchState) -> None:
        sha, crc = hashlib.sha256(), 0
        with open(partial, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
                crc = zlib.crc32(chunk, crc)
        if file.sha256 is not None and sha.hexdigest() != file.sha256:
            self._forget_partial(file.path)
            raise _digest_differs(file)
        validators = self._validators(file, state)
        self._place(file, partial, (sha.hexdigest(), crc), validators, state)
        state.sql("DELETE FROM block WHERE path = ?", file.path)
        state.sql("DELETE FROM partial WHERE path = ?", file.path)

    def _whole(self, file: Absent) -> int:
        origin = self._origin_client()
        state = self._fetch_state()
        sha, crc = hashlib.sha256(), 0
        received = 0
        work = state.folder / "tmp"
        work.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work, delete=False) as sink:
            try:
                with origin.get(file, None, None) as response:
                    for chunk in response.iter_raw():
                        received += len(chunk)
                        if received > file.size:
                            break
                        sha.update(chunk)
                        crc = zlib.crc32(chunk, crc)
                        sink.write(chunk)
                    headers = response.headers
                origin.received += received
                if received != file.size:
                    why = f"the origin sent {received} bytes, {file.size} listed"
                    raise ArchiveError("TA-E942", file.path, why)
                if file.sha256 is not None and sha.hexdigest() != file.sha256:
                    raise _digest_differs(file)
                sink.close()
                validators = dataclasses.replace(
                    file,
                    etag=file.etag or headers.get("etag"),
                    last_modified=file.last_modified or headers.get("last-modified"),
                )
                self._place(file, Path(sink.name), (sha.hexdigest(), crc), validators, state)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sink.name)
        self._within_budget(keep=file.path)
        return received

    def _place(
        self,
        file: Absent,
        fetched: Path,
        digests: tuple[str, int],
        validators: Absent,
        state: FetchState,
    ) -> None:
        """Rename a whole, checked file into ``data/`` (folders made without following
        links), record it, and tell the hook (with ``validators`` ' ETag and Last-Modified)."""
        digest, crc = digests
        target = self._target(file.path)
        os.chmod(fetched, 0o644)
        folder = Path(self._root)
        for part in file.path.split("/")[:-1]:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            if folder.is_symlink() or not folder.is_dir():
                raise ArchiveError("TA-E203", file.path, "a symlink or file is on its path")
        os.replace(fetched, target)
        state.sql(
            "INSERT OR REPLACE INTO fetched VALUES (?, ?, ?, ?)",
            file.path,
            file.size,
            digest,
            time.time(),
        )
        self._members[file.path] = Member(file.path, file.size)
        self._all[file.path] = self._members[file.path]
        self._absent.pop(file.path, None)
        if self._on_fetched is not None:
            with contextlib.suppress(OSError, sqlite3.Error):  # a cache is a nicety here
                pair = (validators.etag, validators.last_modified)
                self._on_fetched(file, target, digest, crc, pair)

    def _within_budget(self, keep: str) -> None:
        """Drop least recently used fetched files until the cap holds (never ``keep``)."""
        cap = self.policy.max_bytes
        if cap is None:
            return
        state = self._fetch_state()
        if state.used_bytes() <= cap:
            return
        for path, _ in state.least_recent():
            if path == keep:
                continue
            self.drop([path])
            if state.used_bytes() <= cap:
                return

    def _forget_partial(self, path: str) -> None:
        state = self._fetch_state()
        with contextlib.suppress(FileNotFoundError):
            self._partial_path(path).unlink()
        state.sql("DELETE FROM block WHERE path = ?", path)
        state.sql("DELETE FROM partial WHERE path = ?", path)

    def _touch(self, path: str) -> None:
        """Mark a fetched file used (once per open archive: the size cap's order)."""
        if path in self._touched or path not in self._listed or self._state is None:
            return
        self._touched.add(path)
        self._state.sql("UPDATE fetched SET used = ? WHERE path = ?", time.time(), path)

    def _origin_client(self) -> Origin:
        with self._guard:
            if self._origin is None:
                self._origin = Origin(self._origin_url, self.policy.api_key)
            return self._origin

    def _origin_bytes(self) -> int:
        return self._origin.received if self._origin is not None else 0

    def _fetch_state(self) -> FetchState:
        with self._guard:
            if self._state is None:
                self._state = FetchState(Path(self._root, FETCH_WORK_DIR))
                for path in self._members:  # fetched before: the cap's order knows them
                    self._touched.discard(path)
            return self._state

    def _existing_state(self) -> FetchState | None:
        """The work folder's state when there is one (offline: nothing is created)."""
        if self._state is None and not Path(self._root, FETCH_WORK_DIR).is_dir():
            return None
        return self._fetch_state()

    def _file_lock(self, path: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.RLock())  # type: ignore[arg-type]

    def _target(self, path: str) -> Path:
        return Path(self._root, *path.split("/"))

    def _partial_path(self, path: str) -> Path:
        folder = Path(self._root, FETCH_WORK_DIR, "partial")
        if self.policy.enabled:
            folder.mkdir(parents=True, exist_ok=True)
        return folder / hashlib.sha256(path.encode()).hexdigest()


def _digest_differs(file: Absent) -> ArchiveError:
    return ArchiveError(
        "TA-E942", file.path, "SHA-256 of the fetched file differs from the manifest"
    )


def _runs(blocks: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted block numbers as (first, last) runs of consecutive blocks."""
    start = previous = None
    for block in blocks:
        if start is None:
            start = previous = block
        elif block == previous + 1:
            previous = block
        else:
            yield start, previous
            start = previous = block
    if start is not None:
        yield start, previous


__all__ = ["BLOCK", "WHOLE_LIMIT", "Absent", "FetchPolicy", "FetchState", "LazySource", "Origin"]
