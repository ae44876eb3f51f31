"""tiled-archive: a versioned archive format for offline Tiled data, and its reference
implementation (writer, reader, validator, in-process server).

>>> import tiled_archive
>>> with tiled_archive.open("scans.zip") as client:   # the normal Tiled client, no server
...     client["scan1"]["primary"][:10]
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from tiled.client.base import BaseClient

    from .validator import Report

__version__ = "0.1.0"
__all__ = ["download", "open", "validate", "__version__"]


def __dir__() -> list[str]:
    return sorted(__all__)


def open(path: str | _Path, **client_kwargs: _Any) -> BaseClient:  # noqa: A001 -- as builtins
    """Open an archive (a directory or a ZIP file) as the normal Tiled client, served
    in-process: no socket, no server. Returns the root node's client (a ``Container`` for
    an archive's root); use it as a context manager, or ``close()`` it, to release the archive.

    ``client_kwargs`` go to Tiled's ``tiled.client.from_context`` (e.g. ``structure_clients=
    "numpy"`` for NumPy instead of dask, ``include_data_sources=True``). Raises
    ``ArchiveError`` (a coded message) when the path is not an archive that can be served."""
    from .asgi import open as open_in_process

    return open_in_process(path, **client_kwargs)


def download(source: _Any, dest: str | _Path | None = None, **options: _Any) -> _Path:
    """Download a node of a live Tiled server (a container, a search result or one array or
    table) into an archive at ``dest`` (``*.zip`` or a directory), or with ``catalog=URI,
    data_dir=DIR`` (and ``at=PATH``) straight into a Tiled catalog (SQLite or PostgreSQL);
    see :func:`tiled_archive.downloader.download` for the options."""
    from .downloader import download as download_archive

    return download_archive(source, dest, **options)


def validate(path: str | _Path, *, fast: bool = False, strict: bool = False) -> Report:
    """Check an archive against every rule of the spec; returns a ``Report`` of every problem
    (``report.valid``, ``report.errors``, ``report.warnings``, ``report.to_json()``). ``fast``
    compares sizes and hashes nothing; with ``strict`` warnings make ``report.valid`` False.
    See :func:`tiled_archive.validator.validate`."""
    from .validator import validate as validate_archive

    return validate_archive(path, fast=fast, strict=strict)
