"""A Tiled catalog's readable storage as a byte source: the files its assets name, confined.

An archive's files are its members; a live catalog's are wherever its assets' URIs point.
:class:`ReadableStorage` holds the folders a caller trusts (``readable_storage=[...]``) and
maps an asset URI (``file:`` or, for a ragged array's database, ``duckdb:``) to a local path
only when the path, with every symbolic link resolved, lies inside one of them (TA-E923
otherwise: Tiled's own check compares the URI's text, so a link inside the storage, or a
``..``, leads out of it). :meth:`ReadableStorage.files` gives the files of one data source as a
:class:`StorageFiles` byte source, so the same data-file checks as an archive's
(:mod:`tiled_archive.inspectors`) run on them before any library is given them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from ..rules.problems import ArchiveError, Problem
from . import ByteSource, Member, Span

#: The URI schemes of assets that are local files (``duckdb:``: Tiled's SQL storage in a file).
LOCAL_SCHEMES = ("file", "duckdb")


class ReadableStorage:
    """The folders whose files a catalog's assets may name (resolved once, at open)."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = [Path(os.path.realpath(root)) for root in roots]

    def local_path(self, data_uri: str) -> Path:
        """The local file (or folder) an asset URI names, symbolic links resolved; TA-E923
        when that is not a local file inside the readable storage."""
        from urllib.parse import urlparse

        from tiled.utils import path_from_uri

        scheme = urlparse(data_uri).scheme
        if scheme == "":
            raise ArchiveError(
                "TA-E923",
                data_uri,
                "a relative URI, as an archive names its files: open the archive's folder "
                "with tiled_archive.open(), or relocate it (tiled-archive relocate)",
            )
        if scheme not in LOCAL_SCHEMES:
            raise ArchiveError(
                "TA-E923",
                data_uri,
                "the asset is not a local file (from_catalog reads file: and duckdb: assets)",
            )
        resolved = Path(os.path.realpath(path_from_uri(data_uri)))
        if not self.holds(resolved):
            raise ArchiveError("TA-E923", data_uri, self._outside(resolved))
        if not resolved.exists():
            raise ArchiveError("TA-E504", data_uri, f"the asset points at nothing: {resolved}")
        return resolved

    def holds(self, path: Path) -> bool:
        """Whether the resolved ``path`` lies inside one of the storage folders."""
        return any(path.is_relative_to(root) for root in self.roots)

    def _outside(self, resolved: Path) -> str:
        folders = ", ".join(str(root) for root in self.roots) or "none given"
        return f"resolves to {resolved}, outside the readable storage ({folders})"

    def files(self, assets: Iterable[tuple[Path, bool]]) -> StorageFiles:
        """The files of one data source's assets (resolved paths, and whether each is a
        folder): a folder's files below it, walked without following links (a link to a file
        inside the storage is listed at its own name; one leading out is TA-E923)."""
        members: dict[str, Path] = {}
        for path, is_directory in assets:
            if not is_directory:
                members[str(path)] = path
                continue
            for name, target in self._walk(path):
                members[name] = target
        return StorageFiles(members)

    def _walk(self, folder: Path) -> Iterator[tuple[str, Path]]:
        pending = [folder]
        while pending:
            directory = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        yield entry.path, Path(entry.path)
                    elif entry.is_symlink():
                        target = Path(os.path.realpath(entry.path))
                        if not self.holds(target):
                            raise ArchiveError("TA-E923", entry.path, self._outside(target))
                        if target.is_file():
                            yield entry.path, target


class StorageFiles(ByteSource):
    """Files of readable storage as members, keyed by their paths (resolved)."""

    def __init__(self, files: Mapping[str, Path]):
        self.location = Path("/")
        self.problems: list[Problem] = []
        self._paths = dict(files)
        stats = {name: path.stat() for name, path in self._paths.items()}
        self._members = {name: Member(name, stat.st_size) for name, stat in stats.items()}
        #: What identifies these files' current content: a file replaced, rewritten or
        #: touched, or a folder's file added or removed, changes it.
        self.signature = tuple(
            (name, s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
            for name, s in sorted(stats.items())
        )

    def members(self) -> Mapping[str, Member]:
        return MappingProxyType(self._members)

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        with self.open(path) as file:
            file.seek(offset)
            return file.read(-1 if size is None else size)

    def open(self, path: str) -> BinaryIO:
        # O_NOFOLLOW: the resolved path's last component swapped for a link since is refused.
        fd = os.open(self._paths[path], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(fd, "rb")

    def span(self, path: str) -> Span:
        return Span(self._paths[path], 0, self._members[path].size)
