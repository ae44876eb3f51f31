"""A directory tree as a byte source: its regular files are the members, nothing else is.

The tree is listed once, when the source is opened, without following symlinks; symlinks and
special files are problems (TA-E203), never members. Members are opened by walking down from the
root one directory at a time with ``O_NOFOLLOW``, so a symlink put in place after the listing
cannot make the source read a file outside the root.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from ..rules.names import FETCH_WORK_DIR
from ..rules.problems import ArchiveError, Problem
from . import ByteSource, Member, Span

# O_NONBLOCK: opening a FIFO swapped in after the listing must fail the regular-file check,
# not block forever waiting for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
# What opening a symlink with O_NOFOLLOW, or a file as a directory, fails with.
_NOT_FOLLOWED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


class DirectorySource(ByteSource):
    """The regular files below ``root``, keyed by their ``/``-joined relative paths."""

    def __init__(self, root: Path):
        self.location = Path(root)
        self.problems: list[Problem] = []
        self._root = os.path.realpath(self.location)
        self._members = dict(sorted(self._walk()))

    def members(self) -> Mapping[str, Member]:
        return MappingProxyType(self._members)

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        if offset < 0 or (size is not None and size < 0):
            raise ValueError(f"negative offset or size: {offset}, {size}")
        fd = self._open_member(path)
        try:
            # As listed: a file that grew since is read up to its listed size only.
            remaining = self._members[path].size - offset
            if size is not None:
                remaining = min(remaining, size)
            parts = []
            while remaining > 0:
                part = os.pread(fd, remaining, offset)
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                remaining -= len(part)
            return b"".join(parts)
        finally:
            os.close(fd)

    def restat(self, paths: list[str]) -> None:
        """List these members again as they are now (files rewritten in place: a growing
        mirror's catalog and tag files)."""
        for path in paths:
            fd = self._open_member(path)
            try:
                self._members[path] = Member(path, os.fstat(fd).st_size)
            finally:
                os.close(fd)

    def open(self, path: str) -> BinaryIO:
        """The member's file itself, opened read-only (seekable), named by its path
        (libraries such as tifffile take a file object's ``name`` for a path)."""
        file = os.fdopen(self._open_member(path), "rb")
        file.raw.name = os.path.join(self._root, *path.split("/"))  # type: ignore[attr-defined]
        return file

    def span(self, path: str) -> Span:
        member = self._members[path]
        return Span(Path(self._root, *path.split("/")), 0, member.size)

    def _walk(self) -> Iterator[tuple[str, Member]]:
        """Every regular file below the root; symlinks and special files become problems."""
        pending = [(self._root, "")]
        while pending:
            directory, prefix = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    relpath = prefix + entry.name
                    if relpath == FETCH_WORK_DIR:
                        continue  # a fetcher's work folder: not part of the archive (spec 4.1)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, relpath + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        size = entry.stat(follow_symlinks=False).st_size
                        yield relpath, Member(relpath, size)
                    else:
                        kind = "symlink" if entry.is_symlink() else "special file"
                        self.problems.append(
                            Problem("TA-E203", relpath, f"{kind}; not an archive member")
                        )

    def _open_member(self, path: str) -> int:
        """A descriptor of a listed member, reached from the root without following links."""
        if path not in self._members:
            raise KeyError(path)
        *directories, name = path.split("/")
        try:
            dir_fd = os.open(self._root, _DIR_FLAGS)
            try:
                for directory in directories:
                    parent, dir_fd = dir_fd, os.open(directory, _DIR_FLAGS, dir_fd=dir_fd)
                    os.close(parent)
                fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as err:
            if err.errno in _NOT_FOLLOWED:
                raise ArchiveError(
                    "TA-E203", path, "a symlink or non-directory appeared on its path"
                ) from err
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveError("TA-E203", path, "is no longer a regular file")
        return fd
