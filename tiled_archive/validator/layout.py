"""Sections 1, 2 and 6: what the archive is (directory, ZIP, URL), which files it holds, its
layout, member names and ``mimetype``. ZIP structure problems come from the ZIP source itself."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from ..rules.names import DATA_DIR, FETCH_WORK_DIR, MIMETYPE, MIMETYPE_NAME, REQUIRED_FILES
from ..rules.paths import case_collisions, is_payload_path, path_problems
from ..rules.problems import ArchiveError, Problem
from ..sources import ByteSource
from ..sources.directory import DirectorySource

_RESERVED = frozenset((*REQUIRED_FILES, DATA_DIR))
# Bytes 0-3 and 30-37 of a ZIP archive: a local header whose name is `mimetype` (spec §6).
_ZIP_MARKER = ((0, b"PK\x03\x04"), (30, MIMETYPE_NAME.encode()))


class StopValidation(Exception):
    """Nothing more can be checked (not an archive, or a major version we do not know)."""


class LayoutChecks:
    """Recognition and layout, on the run's state (:class:`~.checker.Checker`)."""

    def _open(self) -> ByteSource | None:
        """The archive's byte source, or None (with TA-E001 or TA-E100) when there is none."""
        if isinstance(self.path, str):
            return self._open_remote(self.path)
        try:
            mode = os.stat(self.path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            self.add("TA-E001", str(self.path), "no such file or directory")
            return None
        if stat.S_ISDIR(mode):
            self.form = "directory"
            return DirectorySource(self.path)
        if not stat.S_ISREG(mode):
            self.add("TA-E001", str(self.path), "neither a directory nor a regular file")
            return None
        try:
            from ..sources.zip import ZipSource

            source = ZipSource(self.path, every_header=True)  # judged now, not as kept
        except ArchiveError as err:
            # A damaged tiled-archive still starts with its marker; anything else is no archive.
            if self._has_zip_marker():
                self.form = "zip"
                self.problems.append(err.problem)
            else:
                self.add("TA-E001", str(self.path), f"not a ZIP file ({err.problem.message})")
            return None
        self.form = "zip"
        return source

    def _open_remote(self, url: str) -> ByteSource | None:
        """A remote ZIP, every local header read (TA-E930/TA-E931 when it cannot be read)."""
        from ..sources import remote_file
        from ..sources.zip import ZipSource

        self.form = "zip"
        try:
            file = remote_file(url, self.storage_options)
        except ArchiveError as err:
            self.problems.append(err.problem)
            return None
        try:
            return ZipSource(file, every_header=True)
        except ArchiveError as err:
            head = file.pread(0, 64)
            file.close()
            if err.code in ("TA-E930", "TA-E931") or self._has_zip_marker(head):
                self.problems.append(err.problem)
            else:
                self.add("TA-E001", url, f"not a ZIP file ({err.problem.message})")
            return None

    def _has_zip_marker(self, head: bytes | None = None) -> bool:
        if head is None:
            with open(self.path, "rb") as handle:
                head = handle.read(64)
        return all(head[at : at + len(marker)] == marker for at, marker in _ZIP_MARKER)

    def _inventory(self) -> None:
        """Which files the archive holds (``present``, with sizes) and which can be read.

        A ZIP member that cannot be read (encrypted, unknown method, special file) is still
        present: its own code says what is wrong, so it is not also reported missing.
        """
        self.readable = self.source.members()
        if self.is_zip:
            self.present: dict[str, int] = {}
            for record in self.source.entries:
                if not record.is_dir:
                    self.present.setdefault(record.name, record.size)
            self.top_level = {record.name.split("/", 1)[0] for record in self.source.entries}
            self.has_data_dir = any(
                record.name.startswith(DATA_DIR + "/") for record in self.source.entries
            )
        else:
            self.present = {path: member.size for path, member in self.readable.items()}
            # A fetcher's work folder is not part of a directory archive (spec 4.1).
            self.top_level = set(os.listdir(self.path)) - {FETCH_WORK_DIR}
            try:
                self.has_data_dir = stat.S_ISDIR(os.lstat(self.path / DATA_DIR).st_mode)
            except FileNotFoundError:
                self.has_data_dir = False
        self.payload = sorted(path for path in self.present if is_payload_path(path))
        if MIMETYPE_NAME not in self.present:
            # Without its marker this is some other directory or ZIP: its other "problems"
            # would only be noise.
            self.problems = [
                Problem(
                    "TA-E001", str(self.path), f"no `{MIMETYPE_NAME}` file: not a tiled-archive"
                )
            ]
            raise StopValidation
        self.problems.extend(self.source.problems)
        if not self.is_zip:
            # ZipSource checks member names itself; a directory's names are checked here.
            for path in self.present:
                self.problems.extend(path_problems(path))
            self.problems.extend(case_collisions(self.present))
        # Folders collide on a case-insensitive filesystem just as files do.
        folders = sorted({folder for path in self.present for folder in folders_of(path)})
        self.problems.extend(case_collisions(folders))

    def _check_layout(self) -> None:
        for name in REQUIRED_FILES:
            if name not in self.present:
                self.add("TA-E002", name, "required file missing")
        if not self.has_data_dir:
            self.add("TA-E002", DATA_DIR + "/", "required folder missing")
        for name in sorted(self.top_level - _RESERVED - {""}):
            self.add("TA-W001", name, "unknown top-level entry")

    def _read(self, name: str) -> bytes | None:
        """A small member's bytes; None when it is absent or unreadable (reported elsewhere)."""
        if name not in self.readable:
            return None
        try:
            return self.source.read(name)
        except ArchiveError as err:
            self.problems.append(err.problem)
            return None

    def _check_mimetype(self) -> None:
        raw = self._read(MIMETYPE_NAME)
        if raw is not None and raw != MIMETYPE.encode():
            self.add("TA-E003", MIMETYPE_NAME, f"holds {raw[:64]!r}, not {MIMETYPE!r}")


def folders_of(path: str) -> Iterator[str]:
    """The folders ``path`` lies in, innermost first: ``a/b/c`` gives ``a/b``, ``a``."""
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path
