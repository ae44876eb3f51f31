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
import threading
from collections import ChainMap
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from ..rules.problems import ArchiveError, Problem
from . import ByteSource, Member, Span

#: The URI schemes of assets that are local files (``duckdb:``: Tiled's SQL storage in a file).
LOCAL_SCHEMES = ("file", "duckdb")


#: A file's version: (device, inode, size, modification and change times).
Version = tuple[int, int, int, int, int]


def _version(stat: os.stat_result) -> Version:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class _Listing:
    """A folder's files as last walked: what the folders were (``tree``), each file's target
    and member, and the files whose own version is checked on every use (``watched``)."""

    tree: tuple[tuple[str, Version], ...]
    paths: dict[str, Path]
    members: dict[str, Member]
    watched: tuple[str, ...]


class ReadableStorage:
    """The folders whose files a catalog's assets may name (resolved once, at open)."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = [Path(os.path.realpath(root)) for root in roots]
        self._listings: dict[tuple[Path, tuple[str, ...] | None], _Listing] = {}
        self._lock = threading.Lock()

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

    def files(
        self, assets: Iterable[tuple[Path, bool]], watched: tuple[str, ...] | None = None
    ) -> StorageFiles:
        """The files of one data source's assets (resolved paths, and whether each is a
        folder): a folder's files below it, walked without following links (a link to a file
        inside the storage is listed at its own name; one leading out is TA-E923).

        A folder is walked again only when one of its folders changed (a file added, removed,
        renamed or replaced by another changes its folder's times); else its last walk is
        reused, and only its files named as in ``watched`` (None: every file) are stat-ed
        again: a file rewritten in place leaves its folder's times alone, so the files the
        checks read whole must be ``watched``. Finding the folders costs a stat of each, and a
        listing only of folders that hold others (a folder's link count is 2 plus its
        subfolders): a Zarr store of 100,000 chunk files is not walked on every read."""
        paths: dict[str, Path] = {}
        members: dict[str, Member] = {}
        versions: list[tuple[str, Version]] = []
        listings: list[_Listing] = []
        for path, is_directory in assets:
            if not is_directory:
                stat = path.stat()
                paths[str(path)], members[str(path)] = path, Member(str(path), stat.st_size)
                versions.append((str(path), _version(stat)))
                continue
            listing = self._listing(path, watched)
            listings.append(listing)
            for name in listing.watched if watched is not None else listing.paths:
                stat = listing.paths[name].stat()
                members[name] = Member(name, stat.st_size)
                versions.append((name, _version(stat)))
        return StorageFiles(
            ChainMap(paths, *(listing.paths for listing in listings)),
            ChainMap(members, *(listing.members for listing in listings)),
            (tuple(versions), tuple(listing.tree for listing in listings)),
        )

    def _listing(self, folder: Path, watched: tuple[str, ...] | None) -> _Listing:
        tree = _tree(folder)
        with self._lock:
            known = self._listings.get((folder, watched))
        if known is not None and known.tree == tree:
            return known
        paths = dict(self._walk(folder))
        listing = _Listing(
            tree,
            paths,
            {name: Member(name, target.stat().st_size) for name, target in paths.items()},
            tuple(
                name for name in paths if watched is not None and name.rsplit("/", 1)[-1] in watched
            ),
        )
        with self._lock:
            self._listings[folder, watched] = listing
            while len(self._listings) > _LISTINGS_KEPT:
                del self._listings[next(iter(self._listings))]
        return listing

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


#: Folder listings kept (a catalog's directory assets: Zarr stores).
_LISTINGS_KEPT = 1024


def _tree(folder: Path) -> tuple[tuple[str, Version], ...]:
    """The version of ``folder`` and of every folder below it (not following links): what
    changes when a file below is added, removed, renamed or replaced."""
    versions = []
    pending = [str(folder)]
    while pending:
        directory = pending.pop()
        stat = os.stat(directory, follow_symlinks=False)
        versions.append((directory, _version(stat)))
        if stat.st_nlink == 2:  # "." and its parent's entry only: no subfolder
            continue
        with os.scandir(directory) as entries:
            pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    return tuple(sorted(versions))


class StorageFiles(ByteSource):
    """Files of readable storage as members, keyed by their paths (resolved)."""

    def __init__(
        self, paths: Mapping[str, Path], members: Mapping[str, Member], signature: Hashable
    ):
        """``paths``: each member's target; ``signature``: what identifies these files'
        current content (:meth:`ReadableStorage.files`)."""
        self.location = Path("/")
        self.problems: list[Problem] = []
        self._paths = paths
        self._members = members
        #: A file replaced, rewritten or touched, or a folder's file added or removed,
        #: changes it.
        self.signature = signature

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
