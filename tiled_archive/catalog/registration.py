"""Building a catalog with Tiled's own registration (``tiled.client.register``), without
Tiled's server.

Tiled's registration walks the files, picks each one's adapter and structure, and creates
nodes through a client. Given a client of an in-process app, each node is an HTTP request
through FastAPI, and building the app alone analyses every route (0.6-1.1 s, plus importing
the server). :class:`CatalogNode` is the part of the client registration calls (``get``,
``new``, ``delete``), answered the way the server's register route answers it: the same
request body, parsed by Tiled's own request model, becomes the rows Tiled's catalog adapter
would write (:mod:`.node_rows`), written in one transaction at the end. A test builds the same
trees both ways and compares the catalogs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..rules.formats import zarr_dtype_warnings_silenced
from .db_file import create_catalog_file
from .node_rows import Collision, NewNodes


@dataclass
class RegistrationReport:
    """What Tiled's registration skipped: files it has no adapter for, and key collisions."""

    skipped: list[str]
    collisions: list[str]


class _RegistrationLog(logging.Handler):
    """Collects the SKIPPED / COLLISION lines Tiled's registration only logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.report = RegistrationReport([], [])

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "COLLISION" in message:
            self.report.collisions.append(message.split("COLLISION:", 1)[1].strip())
        elif "SKIPPED" in message:
            self.report.skipped.append(message.split("SKIPPED:", 1)[1].strip())


async def sorted_walker(node, path, files, directories, settings):  # noqa: ARG001
    """A registration walker that only sorts: node ids then follow names, not disk order."""
    return sorted(files), sorted(directories)


class CatalogNode:
    """A node of the catalog being built, with the client methods Tiled's registration calls
    (``get``, ``new``, ``delete``), answered as the server's register route answers them. The
    nodes are kept in :class:`NewNodes` and written together at the end."""

    def __init__(self, nodes: NewNodes, node_id: int = 0):
        self.nodes = nodes
        self.node_id = node_id

    def get(self, key: str) -> CatalogNode | None:
        child = self.nodes.child(self.node_id, key)
        return None if child is None else CatalogNode(self.nodes, child)

    def new(
        self,
        structure_family: Any,
        data_sources: list[Any],
        *,
        key: str,
        metadata: dict | None = None,
        specs: list | None = None,
        access_tags: list[str] | None = None,
    ) -> CatalogNode:
        """Create a child as the server's register route does: the client's request body
        (JSON, as the client encodes it) parsed by Tiled's request model; a key taken is the
        route's 409."""
        from tiled.client.utils import ClientError, normalize_specs
        from tiled.server.schemas import PostMetadataRequest
        from tiled.structures.core import StructureFamily
        from tiled.utils import safe_json_dump

        body = PostMetadataRequest.model_validate_json(
            safe_json_dump(
                {
                    "id": key,
                    "metadata": metadata or {},
                    "structure_family": StructureFamily(structure_family),
                    "specs": normalize_specs(specs or []),
                    "data_sources": [asdict(source) for source in data_sources],
                    "access_tags": access_tags,
                }
            )
        )
        try:
            child = self.nodes.add(
                self.node_id,
                body.id,
                body.structure_family,
                body.metadata,
                body.specs,
                body.data_sources,
            )
        except Collision as err:
            import httpx

            request = httpx.Request("POST", f"/register/{body.id}")
            raise ClientError(str(err), request, httpx.Response(409, request=request)) from None
        return CatalogNode(self.nodes, child)

    def delete(self, recursive: bool = False, external_only: bool = True) -> None:  # noqa: ARG002
        """Registration deletes a node only when two files collide, recursively."""
        self.nodes.delete(self.node_id)


def resolve_prefix(name: str, path: Path) -> str:
    """Where registration puts a top-level source: a file, or a folder Tiled reads as one item
    (a Zarr store), is registered at the root under its own key; any other folder becomes the
    container ``name``."""
    from tiled.client.register import Settings, resolve_mimetype

    if path.is_file() or resolve_mimetype(path, Settings.init().mimetypes_by_file_ext):
        return "/"
    return f"/{name}"


def build_catalog(db: Path, sources: Mapping[str, Path]) -> RegistrationReport:
    """Create ``db`` with Tiled's catalog schema and register each source under its top-level
    key with Tiled's registration.

    ``sources`` maps a top-level name to a file or folder; a folder that Tiled reads as one item
    (e.g. a Zarr store) becomes one node, any other folder a container of its contents.
    """
    from tiled.client.register import register

    handler = _RegistrationLog()
    logger = logging.getLogger("tiled.client.register")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)

    create_catalog_file(db)
    nodes = NewNodes(db)

    async def register_all() -> None:
        for name in sorted(sources):
            path = sources[name].resolve()
            await register(
                CatalogNode(nodes),
                path,
                prefix=resolve_prefix(name, path),
                walkers=["tiled_archive.catalog.registration:sorted_walker"],
                overwrite=False,
            )

    try:
        with zarr_dtype_warnings_silenced():  # Tiled's Zarr adapter reads a group's metadata
            asyncio.run(register_all())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    nodes.write()
    return handler.report
