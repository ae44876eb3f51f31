"""What :func:`tiled_archive.download` did: :class:`DownloadResult`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.filesize import decimal


@dataclass(frozen=True)
class DownloadResult(os.PathLike):
    """What a download wrote and what it cost: the archive at ``path`` (or, downloading into a
    catalog, its data folder) holding ``nodes`` nodes; ``fetched_bytes`` came over the network
    this time, ``reused_bytes`` were already in the cache (``revalidated`` cached files had their
    freshness asked of the server); ``streamed`` when the server's archive route sent it whole.
    ``serve_command`` is the shell command that serves it with stock Tiled.

    It is a path (``os.PathLike``): ``tiled_archive.open(result)`` opens the archive.
    """

    path: Path
    nodes: int
    fetched_bytes: int
    reused_bytes: int
    revalidated: int
    streamed: bool
    serve_command: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.nodes} node(s), {decimal(self.fetched_bytes)} fetched, "
            f"{decimal(self.reused_bytes)} from the cache\n"
            f"serve it with stock Tiled: {self.serve_command}"
        )
