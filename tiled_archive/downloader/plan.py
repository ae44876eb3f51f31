"""What a download fetches: the nodes to archive, walked from the server's tree, the files of
their directory assets (``/asset/manifest``), and the archive path of every raw file."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Any

from ..rules.manifest import Severity
from ..rules.names import DATA_DIR
from ..rules.paths import path_problems
from .state import URI_SCHEME, Node, Run, ServerFile, children, node_path, server_path
from .transfer import NotServed, check, parallel, retrying

# -- 1. Plan: walk the server's tree ------------------------------------------------------------


def plan(run: Run) -> None:
    """Every node to archive: the source's parent containers, then the source in full (or,
    for a search result, each match in full)."""
    from tiled.client import from_context

    parts = list(node_path(run.source))
    for depth in range(1, len(parts)):
        parent = from_context(run.source.context, node_path_parts=parts[:depth])
        _add(run, Node(tuple(parts[:depth]), parent, "container"))
    source = run.source.include_data_sources()
    # Tiled's client keeps a search's queries privately. A search result is its matching
    # children, even when the searched node has data sources of its own.
    if getattr(source, "_queries", None):
        if parts:
            _add(run, Node(tuple(parts), source, "container"))
        ancestors = len(run.nodes)
        _walk_children(run, source, None, len(source))
    else:
        ancestors = len(run.nodes)
        walk(run, source)
    run.matched = len(run.nodes) - ancestors
    run.progress.update(run.listing, total=len(run.nodes))


def plan_children(
    run: Run, client: Any, known: Collection[str] = (), seen: dict[str, Any] | None = None
) -> None:
    """One level, for a browse mirror: the children of container ``client`` whose keys are
    not in ``known``, each added as :func:`walk` adds it, without its descendants (a container
    is listed when it is visited); ``seen`` gets every child's attributes by key."""
    for child in children(client.include_data_sources()):
        path = node_path(child)
        if seen is not None:
            seen[path[-1]] = child.item["attributes"]
        if path[-1] in known:
            continue
        attributes = child.item["attributes"]
        sources = attributes.get("data_sources") or []
        if sources:
            node = Node(path, child, "raw")
            _add(run, node)
            _plan_assets(run, node, sources)
        elif attributes["structure_family"] == "container":
            _add(run, Node(path, child, "container"))
        else:
            _add(run, Node(path, child, "data-api", reason="the server lists no data source"))


def _add(run: Run, node: Node) -> None:
    run.nodes.append(node)
    run.progress.update(run.listing, completed=len(run.nodes), total=len(run.nodes) + run.unlisted)


def _walk_children(run: Run, client: Any, fallback_reason: str | None, count: object) -> None:
    """Walk a container's children; ``count``, how many the server says it holds, makes the
    listing's total (so the bar shows ``7/12``, not ``7/?``) until they are walked."""
    announced = count if isinstance(count, int) and count > 0 else 0
    run.unlisted += announced
    for child in children(client):
        if announced:
            announced -= 1
            run.unlisted -= 1
        walk(run, child, fallback_reason)
    run.unlisted -= announced  # fewer than the server said


def walk(run: Run, client: Any, fallback_reason: str | None = None) -> None:
    """Add ``client``'s node and its descendants; with ``fallback_reason`` (a subtree whose
    raw assets were refused) nothing is fetched raw."""
    attributes = client.item["attributes"]
    path = node_path(client)
    sources = attributes.get("data_sources") or []
    if sources and fallback_reason is None:
        node = Node(path, client, "raw")
        _add(run, node)
        _plan_assets(run, node, sources)
    elif attributes["structure_family"] == "container":
        if path:
            _add(run, Node(path, client, "container", reason=fallback_reason))
        count = (attributes.get("structure") or {}).get("count")
        _walk_children(run, client, fallback_reason, count)
    else:
        reason = fallback_reason or "the server lists no data source for it"
        _add(run, Node(path, client, "data-api", reason=reason))


def _plan_assets(run: Run, node: Node, sources: list[dict[str, Any]]) -> None:
    for source in sources:
        if not source.get("assets"):
            run.refuse(node, "a data source without assets")
        for asset in source.get("assets") or []:
            path = server_path(asset["data_uri"])
            if path is None:
                scheme = URI_SCHEME.match(asset["data_uri"])
                run.refuse(
                    node,
                    f"its data is a {scheme.group()} asset, not a file"
                    if scheme
                    else f"its asset URI {asset['data_uri']} is not a plain relative path",
                )
            elif not asset["is_directory"]:
                node.files.append(ServerFile(node, asset, None, path))


# -- 2. Directory assets: their file lists ------------------------------------------------


def list_directories(run: Run) -> None:
    """Add every file of every directory asset (``/asset/manifest``) to its node."""
    pairs = [
        (node, asset)
        for node in run.nodes
        if node.method == "raw"
        for source in node.attributes["data_sources"]
        for asset in source["assets"]
        if asset["is_directory"]
    ]
    parallel(run, pairs, lambda pair: _list_directory(run, *pair))


def _list_directory(run: Run, node: Node, asset: dict[str, Any]) -> None:
    if run.raw_refused is not None:
        run.refuse(node, run.raw_refused)
        return
    root = server_path(asset["data_uri"])
    assert root is not None  # non-file assets were refused when planned
    url = node.asset_url("manifest")

    def attempt() -> list[str]:
        response = run.http.get(
            url, params={"id": asset["id"]}, headers={"Accept": "application/json"}
        )
        check(response)
        return response.json()["manifest"]

    try:
        listing = retrying(run, attempt, url)
    except NotServed as err:
        run.refuse_raw(node, err)
        return
    except (KeyError, TypeError, ValueError):
        listing = None
    if not isinstance(listing, list) or not all(isinstance(e, str) for e in listing):
        run.refuse(node, "the server's directory listing is not a list of paths")
        return
    if not listing:
        run.refuse(node, "a directory asset the server lists as empty")
    for entry in listing:
        # Tiled 0.2.x lists absolute server paths; a relative one is taken as in the asset.
        path = PurePosixPath(entry)
        if path.is_absolute() and not path.is_relative_to(root):
            run.refuse(node, f"its directory listing names {entry}, outside the asset")
            return
        relative = path.relative_to(root) if path.is_absolute() else path
        node.files.append(ServerFile(node, asset, relative.as_posix(), root / relative))


# -- 3. Archive paths -------------------------------------------------------------------


def assign_server_paths(run: Run) -> None:
    """Archive paths of raw files that never change as a mirror grows: ``data/`` and the
    server path (the deepest common folder of files not seen yet cannot be known). A node
    whose file names the format cannot hold is left out (``data-api``)."""
    run.base = PurePosixPath("/")
    for node in run.nodes:
        if node.method != "raw":
            continue
        for remote in node.files:
            if not _member(run, remote, run.base):
                break


def _member(run: Run, remote: ServerFile, base: PurePosixPath) -> bool:
    """Give ``remote`` its archive path below ``base``; False (its node refused: read
    through the data API) when the format cannot hold that path."""
    remote.member = f"{DATA_DIR}/{remote.server_path.relative_to(base)}"
    errors = [p for p in path_problems(remote.member) if p.severity is Severity.ERROR]
    if errors:
        run.refuse(remote.node, f"a file name the format cannot hold ({errors[0]})")
    return not errors


def assign_members(run: Run) -> None:
    """Archive paths of raw files: the server paths relative to their deepest common folder
    (as ``create_from_catalog`` does); a served archive's own paths when every URI is in
    archive form. A node whose file names the format cannot hold is fetched through the data
    API instead."""
    while True:
        raw = [node for node in run.nodes if node.method == "raw"]
        uris = {
            asset["data_uri"]
            for node in raw
            for source in node.attributes["data_sources"]
            for asset in source["assets"]
        }
        if not uris:
            return
        paths = {uri: server_path(uri) for uri in uris}
        if all(
            not uri.startswith("file:") and path.parts[1:2] == (DATA_DIR,)
            for uri, path in paths.items()
        ):
            base = PurePosixPath("/", DATA_DIR)  # a served archive's: its data/ stays data/
        else:
            parents = [str(path.parent) for path in paths.values()]
            base = PurePosixPath(os.path.commonpath(parents))
        claims: dict[str, tuple] = {}  # archive path -> the one server file it holds
        for node in raw:
            for remote in node.files:
                if not _member(run, remote, base):
                    break
                claim = (remote.asset["id"], remote.relative_path)
                if claims.setdefault(remote.member, claim) != claim:
                    run.refuse(node, f"{remote.member} would hold two of the server's files")
                    break
        # A file where another file's folder would be (a file asset and a directory asset).
        folders = {m.rsplit("/", i)[0] for m in claims for i in range(1, m.count("/"))}
        for node in raw:
            clash = [r.member for r in node.files if r.member in folders]
            if clash:
                run.refuse(node, f"{clash[0]} is a file and also another file's folder")
        if all(node.method == "raw" for node in raw):
            run.base = base
            return
