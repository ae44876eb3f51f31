"""What an archive holds, without checking or serving it: ``tiled-archive info``.

Read from the manifest and the catalog alone (plain SQLite, no Tiled import), so it answers
in well under a second. Nothing here is verified beyond what opening an archive checks (its
structure, the manifest's schema, the catalog's digest): the digests it reports are what
``tiled-archive validate`` checks. Every text from the archive is shown through
:func:`~tiled_archive.rules.clip` (escaped, never rich markup).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.tree import Tree

from ..rules.problems import ArchiveError, Problem, clip, plural
from ..rules.schemas import load_json
from ..sources.zip import ZipSource
from . import Archive, ArchiveWarning, open_archive

#: Children shown per container in the tree unless every node is asked for.
CHILDREN_SHOWN = 20  # `info --all`'s help names the number


@dataclass
class NodeInfo:
    """One node below the root: its path (keys joined by ``/``), family, and for a node with
    data its data source's mimetype, a summary of its structure, its assets' size, and the
    archive paths of its assets (the files that back it)."""

    path: str
    family: str
    mimetype: str | None = None
    structure: dict[str, Any] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    #: Archive paths of its data sources' assets, in their order: a file (``data/a.h5``), or
    #: a folder of files ending in ``/`` (a directory asset: ``data/b.zarr/``).
    assets: list[str] = field(default_factory=list)
    children: list[NodeInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "family": self.family,
            "mimetype": self.mimetype,
            **self.structure,
            "files": self.files,
            "bytes": self.bytes,
            "assets": self.assets,
        }

    def walk(self) -> Iterator[NodeInfo]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class ArchiveInfo:
    """What :func:`describe` found: the manifest's facts, the payload's size and the nodes."""

    path: str
    form: str
    manifest: dict[str, Any]
    archive_bytes: int
    nodes: list[NodeInfo]
    unreachable: int
    warnings: list[Problem]
    #: An incomplete (lazy) archive's absent files (spec 4.1): their count and bytes.
    absent_files: int = 0
    absent_bytes: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(entry["size"] for entry in self.manifest["files"])

    def to_json(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "path": self.path,
            "form": self.form,
            "format_version": manifest["format_version"],
            "producer": manifest["producer"],
            "created": manifest["created"],
            "tiled_schema_revision": manifest["tiled_schema_revision"],
            "provenance": manifest.get("provenance"),
            "history": manifest.get("history", []),
            "root": manifest.get("root"),
            "fallbacks": manifest.get("fallbacks", []),
            "archive_bytes": self.archive_bytes,
            "catalog": manifest["catalog"],
            "payload": {
                "files": len(manifest["files"]),
                "bytes": self.payload_bytes,
                "absent_files": self.absent_files,
                "absent_bytes": self.absent_bytes,
            },
            "origin": (manifest.get("fetch") or {}).get("origin"),
            "checks": {
                "sha256": len(manifest["files"]) + 1,  # payload files and catalog.db
                "bagit": True,
                "zip_crc32": self.form == "zip",
                "verified": False,
            },
            "nodes": [node.to_json() for top in self.nodes for node in top.walk()],
            "unreachable_nodes": self.unreachable,
            "warnings": [
                {"code": p.code, "path": p.path, "message": p.message} for p in self.warnings
            ],
        }


#: The latest updates ``info`` lists (``--json`` gives every one).
HISTORY_SHOWN = 5


def describe(path: str | Path) -> ArchiveInfo:
    """Open the archive at ``path`` and describe it. Raises ``ArchiveError`` when it cannot be
    opened (the rule broken); warnings found on opening are in the result, not emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        archive = open_archive(path)
    found = [w.message.problem for w in caught if isinstance(w.message, ArchiveWarning)]
    with archive:
        nodes, unreachable = _nodes(archive)
        absent = set(archive.absent())
        archive_bytes = (
            archive.source.file.size
            if isinstance(archive.source, ZipSource)
            else sum(m.size for name, m in archive.members().items() if name not in absent)
        )
        members = archive.members()
        return ArchiveInfo(
            absent_files=len(absent),
            absent_bytes=sum(members[name].size for name in absent),
            path=str(path),
            form="directory" if archive.is_directory else "zip",
            manifest=archive.manifest.to_json(),
            archive_bytes=archive_bytes,
            nodes=nodes,
            unreachable=unreachable,
            warnings=found,
        )


def _nodes(archive: Archive) -> tuple[list[NodeInfo], int]:
    """The tree below the root, walked from the root down (a catalog's parent links are
    untrusted: a cycle is never followed), and how many nodes it does not reach."""
    sizes = {entry.path: entry.size for entry in archive.manifest.files}
    uri = f"{archive.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            rows = conn.execute("SELECT id, parent, key, structure_family FROM nodes").fetchall()
            sources = conn.execute(
                "SELECT d.node_id, d.mimetype, s.structure FROM data_sources d"
                " LEFT JOIN structures s ON s.id = d.structure_id ORDER BY d.id"
            ).fetchall()
            assets = conn.execute(
                "SELECT d.node_id, a.data_uri FROM data_sources d"
                " JOIN data_source_asset_association x ON x.data_source_id = d.id"
                " JOIN assets a ON a.id = x.asset_id ORDER BY d.id, x.parameter, x.num, a.id"
            ).fetchall()
    except sqlite3.DatabaseError as err:
        raise ArchiveError("TA-E500", "catalog.db", f"SQLite: {err}") from None

    children: dict[object, list[tuple[object, str, str]]] = {}
    for node_id, parent, key, family in rows:
        children.setdefault(parent, []).append((node_id, str(key), str(family)))
    source_of = {}
    for node_id, mimetype, structure in sources:
        source_of.setdefault(node_id, (mimetype, structure))  # Tiled serves the first
    files_of: dict[object, set[str]] = {}
    assets_of: dict[object, list[str]] = {}
    paths = sorted(sizes)  # a folder's files are one run of it: found by bisection, not a scan
    for node_id, data_uri in assets:
        with contextlib.suppress(ArchiveError, TypeError):  # a bad URI: validate reports it
            member = archive.asset_member(data_uri)
            if member in sizes:
                below = [member]
            else:
                start = bisect.bisect_left(paths, member + "/")
                below = paths[start : bisect.bisect_left(paths, member + "0", start)]
                member += "/"
            files_of.setdefault(node_id, set()).update(below)
            assets_of.setdefault(node_id, []).append(member)

    roots = [node_id for node_id, parent, _, _ in rows if parent is None]
    seen: set[object] = set(roots)
    top: list[NodeInfo] = []
    stack = [(root, "", top) for root in roots]
    while stack:
        parent_id, prefix, siblings = stack.pop()
        for node_id, key, family in sorted(children.get(parent_id, []), key=lambda c: c[1]):
            if node_id in seen:
                continue
            seen.add(node_id)
            node = NodeInfo(f"{prefix}{key}", family)
            if node_id in source_of:
                mimetype, structure = source_of[node_id]
                node.mimetype = mimetype if isinstance(mimetype, str) else None
                node.structure = _summary(family, structure)
            files = files_of.get(node_id, set())
            node.files, node.bytes = len(files), sum(sizes[p] for p in files)
            node.assets = assets_of.get(node_id, [])
            siblings.append(node)
            stack.append((node_id, f"{node.path}/", node.children))
    return top, len(rows) - len(seen)


def _summary(family: str, text: object) -> dict[str, Any]:
    """The few structure fields a person asks for first: shape and dtype, columns, length."""
    try:
        structure = load_json(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    if not isinstance(structure, dict):
        return {}
    summary: dict[str, Any] = {}
    if isinstance(structure.get("shape"), list):
        summary["shape"] = structure["shape"]
    data_type = structure.get("data_type")
    if isinstance(data_type, dict) and {"kind", "itemsize"} <= data_type.keys():
        order = {"little": "<", "big": ">"}.get(str(data_type.get("endianness")), "|")
        summary["dtype"] = f"{order}{data_type['kind']}{data_type['itemsize']}"
    if family == "table" and isinstance(structure.get("columns"), list):
        summary["columns"] = structure["columns"]
    if isinstance(structure.get("length"), int):
        summary["length"] = structure["length"]
    return summary


def _label(node: NodeInfo) -> str:
    name = node.path.rpartition("/")[2]
    parts = [f"[bold]{escape(clip(name, 80))}[/]", node.family]
    if "shape" in node.structure:
        shape = "×".join("var" if n is None else str(n) for n in node.structure["shape"])
        shape = shape or "scalar"
        parts.append(clip(f"{shape} {node.structure.get('dtype', '')}".strip(), 80))
    if "columns" in node.structure:
        parts.append(plural(len(node.structure["columns"]), "column"))
    if "length" in node.structure:
        parts.append(f"length {node.structure['length']}")
    if node.mimetype:
        parts.append(f"[dim]{escape(clip(node.mimetype, 80))}[/]")
    if node.files:
        parts.append(f"{decimal(node.bytes)} in {plural(node.files, 'file')}")
    if node.assets:  # the first (a sequence's names its folder); --json lists every one
        more = f" and {len(node.assets) - 1} more" if len(node.assets) > 1 else ""
        parts.append(f"[dim]{escape(clip(node.assets[0], 200))}{more}[/]")
    return "  ".join(parts)


def print_info(info: ArchiveInfo, console: Console, *, every_node: bool = False) -> None:
    """The facts, then the node tree (at most CHILDREN_SHOWN children per container unless
    ``every_node``), then what the archive carries to check it."""
    manifest = info.manifest
    producer = " ".join(clip(str(v), 80) for v in manifest["producer"].values())
    facts = [
        ("archive", f"{clip(info.path)} ({info.form}, {decimal(info.archive_bytes)})"),
        ("format", f"tiled-archive {manifest['format_version']}"),
        ("producer", producer),
        ("created", manifest["created"]),
        (
            "catalog",
            f"Tiled schema {manifest['tiled_schema_revision']}, "
            f"{decimal(manifest['catalog']['size'])}",
        ),
        ("payload", f"{plural(len(manifest['files']), 'file')}, {decimal(info.payload_bytes)}"),
    ]
    if manifest.get("fetch"):
        present = len(manifest["files"]) - info.absent_files
        facts.append(
            (
                "incomplete" if info.absent_files else "fetched",
                f"{present} present ({decimal(info.payload_bytes - info.absent_bytes)}), "
                f"{info.absent_files} absent ({decimal(info.absent_bytes)}), fetched from "
                f"{clip(str(manifest['fetch'].get('origin')))}",
            )
        )
    provenance = manifest.get("provenance")
    if isinstance(provenance, dict):
        facts.append(
            (
                "from",
                f"{clip(str(provenance.get('server')))} node {clip(str(provenance.get('node')))}",
            )
        )
        facts.append(
            (
                "retrieved",
                f"{provenance.get('retrieved')} (Tiled "
                f"{clip(str(provenance.get('tiled_version')))})",
            )
        )
        for query in provenance.get("queries") or []:
            facts.append(("search", clip(json.dumps(query, ensure_ascii=False), 200)))
    history = manifest.get("history") or []
    for entry in history[-HISTORY_SHOWN:]:
        fetched = entry.get("fetched_bytes")
        facts.append(
            (
                "updated",
                f"{clip(str(entry['updated']))}: +{entry['added']} -{entry['removed']} "
                f"~{entry['changed']} nodes"
                + (f", {decimal(fetched)} fetched" if isinstance(fetched, int) else "")
                + f" (Tiled {clip(str(entry['tiled_version']))})",
            )
        )
    if len(history) > HISTORY_SHOWN:
        facts.append(("", f"and {len(history) - HISTORY_SHOWN} earlier update(s) (--json)"))
    root = manifest.get("root")
    if isinstance(root, dict):
        keys = ", ".join(clip(str(key), 40) for key in list(root.get("metadata") or {})[:10])
        facts.append(
            ("root", f"metadata {{{keys}}}, {plural(len(root.get('specs') or []), 'spec')}")
        )
    fallbacks = manifest.get("fallbacks") or []
    if fallbacks:
        facts.append(("fallbacks", f"{plural(len(fallbacks), 'node')} read through the data API"))
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        console.print(f"{name:<{width}}  {escape(value)}", highlight=False)

    count = sum(1 for top in info.nodes for _ in top.walk())
    tree = Tree(f"[bold]/[/] ({plural(count, 'node')})")
    _grow(tree, info.nodes, every_node)
    console.print(tree, highlight=False)
    if info.unreachable:
        console.print(
            f"[yellow]{plural(info.unreachable, 'node')} not below the root[/] "
            "(tiled-archive validate says why)",
            highlight=False,
        )
    sha = f"SHA-256 of {plural(len(manifest['files']), 'payload file')} and catalog.db"
    carried = "BagIt manifests" + (", CRC-32 of every member" if info.form == "zip" else "")
    console.print(
        f"checks: {sha}, {carried}; not verified here: "
        f"tiled-archive validate {escape(clip(info.path))}",
        highlight=False,
        soft_wrap=True,
    )
    for problem in info.warnings:
        console.print(f"[yellow]warning[/] {escape(str(problem))}", highlight=False)


def _grow(tree: Tree, nodes: list[NodeInfo], every_node: bool) -> None:
    shown = nodes if every_node else nodes[:CHILDREN_SHOWN]
    for node in shown:
        _grow(tree.add(_label(node), highlight=False), node.children, every_node)
    if len(shown) < len(nodes):
        tree.add(f"[dim]… and {len(nodes) - len(shown)} more (--all lists them)[/]")
