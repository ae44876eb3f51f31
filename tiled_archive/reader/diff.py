"""What differs between two states of a tree of nodes: ``tiled-archive diff A B`` and the
summary of ``tiled-archive update``.

Each state is read from a catalog (plain SQL over Tiled's tables: a 10,000-node catalog in a
fraction of a second) into one :class:`NodeState` per node path: its family, metadata,
specs, structure (with the data source's mimetype and parameters) and data. A node's data is
what its assets hold, file by file relative to each asset, each file known by its SHA-256 or,
where an incomplete archive does not know it yet, by its size and the validators its origin
gave (:class:`FileState`). Where a node's files lie in the archive does not matter: two
archives holding the same bytes under other paths hold the same data.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rules.manifest import Manifest
from ..rules.names import CATALOG_NAME
from ..rules.problems import ArchiveError
from .archive import Archive, open_archive
from .fetching import FetchOptions


@dataclass(frozen=True)
class FileState:
    """What identifies one payload file's content: its size and SHA-256, or (unknown digest)
    the validators its origin sent."""

    size: int
    sha256: str | None
    etag: str | None = None
    last_modified: str | None = None

    def same_as(self, other: FileState) -> bool:
        """Whether both name the same bytes, as far as can be told: equal sizes, and equal
        digests; where a side knows no digest, equal validators from the origin; where a side
        knows neither (a lazy archive downloaded without probing, for a file it never
        fetched), the size alone. A digest on one side and only validators on the other
        cannot be compared: not the same (an update then fetches the file to know)."""
        if self.size != other.size:
            return False
        if self.sha256 is not None and other.sha256 is not None:
            return self.sha256 == other.sha256
        mine, theirs = self.etag or self.last_modified, other.etag or other.last_modified
        if mine and theirs:
            if self.etag and other.etag:
                return self.etag == other.etag
            return self.last_modified == other.last_modified
        knows_nothing = (self.sha256 is None and not mine) or (other.sha256 is None and not theirs)
        return knows_nothing


def manifest_files(manifest: Manifest) -> dict[str, FileState]:
    """Every payload file the manifest lists, by archive path (with its fetch record's
    validators)."""
    record = manifest.fetch.files if manifest.fetch is not None else {}
    states = {}
    for entry in manifest.files:
        source = record.get(entry.path)
        etag = source.etag if source is not None else None
        modified = source.last_modified if source is not None else None
        states[entry.path] = FileState(entry.size, entry.sha256, etag, modified)
    return states


@dataclass(frozen=True)
class NodeState:
    """One node as a comparison sees it."""

    family: str
    #: Metadata and specs, as JSON values or as the catalog's JSON text (parsed only when the
    #: texts of two states differ: most nodes of two states are the same).
    metadata: dict[str, Any] | str
    specs: list[Any] | str
    #: The mimetype, parameters and structure of each data source (values or JSON text).
    structure: list[Any]
    #: Each file of its assets -> its content. Named by the asset's parameter (and number),
    #: then ``/`` and the path inside a directory asset.
    data: dict[str, FileState]


@dataclass(frozen=True)
class NodeChange:
    """How one node differs: which of its parts, and for metadata which top-level keys."""

    path: str
    kinds: tuple[str, ...]
    metadata_keys: tuple[str, ...] = ()
    #: Files whose content differs (relative to their asset; "" for a file asset).
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"node": self.path, "changed": list(self.kinds)}
        if self.metadata_keys:
            record["metadata_keys"] = list(self.metadata_keys)
        if self.files:
            record["files"] = list(self.files)
        return record


@dataclass(frozen=True)
class Differences:
    """Nodes added, removed and changed from one state to another (paths sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[NodeChange, ...] = ()
    #: How many nodes each side holds.
    counts: tuple[int, int] = (0, 0)

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def changed_by(self, kind: str) -> int:
        """How many changed nodes changed in ``kind`` (metadata, specs, structure, data)."""
        return sum(1 for change in self.changed if kind in change.kinds)

    def to_json(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "nodes": {"before": self.counts[0], "after": self.counts[1]},
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [change.to_json() for change in self.changed],
        }

    def lines(self) -> Iterator[str]:
        """One line per difference: ``+ path``, ``- path``, ``~ path: what``."""
        for path in self.added:
            yield f"+ {path}"
        for path in self.removed:
            yield f"- {path}"
        for change in self.changed:
            parts = []
            for kind in change.kinds:
                if kind == "metadata" and change.metadata_keys:
                    parts.append(f"metadata ({', '.join(change.metadata_keys)})")
                elif kind == "data" and change.files:
                    shown = ", ".join(_file_name(name) for name in change.files[:3])
                    more = len(change.files) - 3
                    parts.append(f"data ({shown}{f', {more} more' if more > 0 else ''})")
                else:
                    parts.append(kind)
            yield f"~ {change.path}: {'; '.join(parts)}"

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed "
            f"({self.changed_by('metadata') + self.changed_by('specs')} metadata, "
            f"{self.changed_by('structure')} structure, {self.changed_by('data')} data)"
        )


def _file_name(name: str) -> str:
    """A changed file as a line shows it: its path in a directory asset, else "its file"
    (with the asset's number in a sequence)."""
    label, _, inside = name.partition("/")
    if inside:
        return inside
    return f"its file {label[label.index('[') :]}" if "[" in label else "its file"


def compare(before: Mapping[str, NodeState], after: Mapping[str, NodeState]) -> Differences:
    """How ``after`` differs from ``before``, node by node."""
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = []
    for path in sorted(before.keys() & after.keys()):
        old, new = before[path], after[path]
        kinds = []
        keys: list[str] = []
        if old.family != new.family:
            kinds.append("family")
        if _differ(old.metadata, new.metadata):
            kinds.append("metadata")
            before_metadata, after_metadata = _parsed(old.metadata), _parsed(new.metadata)
            keys = sorted(
                (before_metadata.keys() ^ after_metadata.keys())
                | {
                    key
                    for key in before_metadata.keys() & after_metadata.keys()
                    if _canonical(before_metadata[key]) != _canonical(after_metadata[key])
                }
            )
        if _differ(old.specs, new.specs):
            kinds.append("specs")
        if _differ(old.structure, new.structure):
            kinds.append("structure")
        files = sorted(
            name
            for name in old.data.keys() | new.data.keys()
            if name not in old.data
            or name not in new.data
            or not old.data[name].same_as(new.data[name])
        )
        if files:
            kinds.append("data")
        if kinds:
            changed.append(NodeChange(path, tuple(kinds), tuple(keys), tuple(files)))
    counts = (len(before.keys() - {"/"}), len(after.keys() - {"/"}))  # the root: not a node
    return Differences(tuple(added), tuple(removed), tuple(changed), counts)


def _parsed(value: Any) -> Any:
    """A JSON value with every JSON text in it (at the top, or in a list) parsed."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, list):
        return [_parsed(item) for item in value]
    return value


def _canonical(value: Any) -> str:
    """JSON text that tells ``1``, ``1.0`` and ``true`` apart (Python's ``==`` does not)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _differ(old: Any, new: Any) -> bool:
    """Whether two JSON values (or texts) differ, texts parsed only when they differ."""
    if type(old) is type(new) and isinstance(old, str | list) and old == new:
        return False  # the same text (most nodes): not parsed
    return _canonical(_parsed(old)) != _canonical(_parsed(new))


def catalog_state(
    db: Path,
    member_of: Callable[[str], str | None],
    files: Mapping[str, FileState],
    root: Mapping[str, Any] | None = None,
) -> dict[str, NodeState]:
    """Every node of the catalog ``db`` by path (keys joined by ``/``), its data the
    ``files`` (by archive path) below each asset's member (``member_of`` its data URI; None
    for an asset that is not a file of the archive, such as an SQL table). The root is
    ``/`` when ``root`` (the manifest's metadata and specs of it) is given."""
    uri = f"{db.absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        nodes = conn.execute(
            "SELECT id, parent, key, structure_family, metadata, specs FROM nodes"
        ).fetchall()
        sources = conn.execute(
            "SELECT d.node_id, d.id, d.mimetype, d.parameters, s.structure "
            "FROM data_sources d LEFT JOIN structures s ON s.id = d.structure_id "
            "ORDER BY d.node_id, d.id"
        ).fetchall()
        assets = conn.execute(
            "SELECT a.data_source_id, x.data_uri, x.is_directory, a.parameter, a.num "
            "FROM data_source_asset_association a JOIN assets x ON x.id = a.asset_id "
            "ORDER BY a.data_source_id, a.parameter, a.num, x.data_uri"
        ).fetchall()
    parents = {row[0]: (row[1], row[2]) for row in nodes}
    paths: dict[int, str] = {}

    def path_of(node_id: int) -> str:
        """The node's keys from the root, joined by ``/`` (a ``/`` or ``%`` in a key
        escaped, so no two nodes share a path); iterative, and TA-E506 for a cycle."""
        chain, seen = [], set()
        current = node_id
        while current not in paths and parents.get(current, (None, ""))[0] is not None:
            if current in seen:
                raise ArchiveError("TA-E506", CATALOG_NAME, f"node {node_id} is its own ancestor")
            seen.add(current)
            chain.append(current)
            current = parents[current][0]
        above = paths.get(current, "")
        for link in reversed(chain):
            key = str(parents[link][1]).replace("%", "%25").replace("/", "%2F")
            above = paths[link] = f"{above}/{key}" if above else key
        return paths.get(node_id, above)

    names = sorted(files)
    by_source: dict[int, list[tuple]] = {}
    for row in assets:
        by_source.setdefault(row[0], []).append(row[1:])
    structures: dict[int, list[Any]] = {}
    data: dict[int, dict[str, FileState]] = {}
    for node_id, source_id, mimetype, parameters, structure in sources:
        structures.setdefault(node_id, []).append(
            [json.dumps(mimetype), parameters or "{}", structure or "null"]
        )
        held = data.setdefault(node_id, {})
        for data_uri, is_directory, parameter, num in by_source.get(source_id, []):
            member = member_of(data_uri)
            label = (parameter or "") + (f"[{num}]" if num is not None else "")
            if member is None:
                continue
            if not is_directory:
                if member in files:
                    held[label] = files[member]
                continue
            for name in names[bisect.bisect_left(names, member + "/") :]:
                if not name.startswith(member + "/"):
                    break
                held[f"{label}/{name[len(member) + 1 :]}"] = files[name]
    state = {}
    for node_id, parent, _, family, metadata, specs in nodes:
        if parent is None:
            continue
        state[path_of(node_id)] = NodeState(
            family,
            metadata,
            specs,
            structures.get(node_id, []),
            data.get(node_id, {}),
        )
    if root is not None:
        state["/"] = NodeState(
            "container", dict(root.get("metadata") or {}), list(root.get("specs") or []), [], {}
        )
    return state


def archive_state(archive: Archive) -> dict[str, NodeState]:
    """Every node of an open archive (its root as ``/``), read from its catalog and manifest;
    nothing is fetched for an incomplete archive (its absent files are known by size and
    validators)."""

    def member_of(data_uri: str) -> str | None:
        try:
            return archive.asset_member(data_uri)
        except ArchiveError:  # not a file of the archive (an SQL table's storage)
            return None

    manifest = archive.manifest
    root = manifest.extra.get("root")
    try:
        return catalog_state(
            archive.catalog_path(),
            member_of,
            manifest_files(manifest),
            root if isinstance(root, dict) else {},
        )
    except (ValueError, TypeError, RecursionError, sqlite3.Error) as err:
        # Rows Tiled would not load (spec 3, TA-E506): not JSON, nested past any limit, of
        # the wrong type, or tables without the columns Tiled's schema gives them.
        raise ArchiveError(
            "TA-E506", CATALOG_NAME, f"{archive.location}: a row cannot be read: {err}"
        ) from None


def diff_archives(
    before: str | Path, after: str | Path, storage_options: Mapping | None = None
) -> Differences:
    """How the archive ``after`` differs from ``before`` (any forms: directories, ZIPs, lazy
    archives, ``http(s)://`` or ``s3://`` URLs), node by node. Opening checks each as any
    reader does (ArchiveError with the first problem); nothing is fetched for a lazy one."""
    offline = FetchOptions(fetch=False, offline=True)
    with (
        open_archive(before, storage_options, offline) as old,
        open_archive(after, storage_options, offline) as new,
    ):
        return compare(archive_state(old), archive_state(new))
