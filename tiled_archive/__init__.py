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

    from .downloader.update import UpdateResult
    from .reader.diff import Differences
    from .validator import Report

from .rules.names import __version__

__all__ = [
    "browse",
    "diff",
    "download",
    "from_catalog",
    "open",
    "update",
    "validate",
    "__version__",
]


def __dir__() -> list[str]:
    return sorted(__all__)


def open(path: str | _Path, **client_kwargs: _Any) -> BaseClient:  # noqa: A001 -- as builtins
    """Open an archive (a directory or a ZIP file) as the normal Tiled client, served
    in-process: no socket, no server. Returns the root node's client (a ``Container`` for
    an archive's root); use it as a context manager, or ``close()`` it, to release the archive.

    ``client_kwargs`` go to Tiled's ``tiled.client.from_context`` (e.g. ``structure_clients=
    "numpy"`` for NumPy instead of dask, ``include_data_sources=True``), except ``fetch``,
    ``offline``, ``api_key`` and ``max_bytes``, which say how a lazy archive fetches (see
    :func:`tiled_archive.serve.client.open`). Raises ``ArchiveError`` (a coded message) when
    the path is not an archive that can be served."""
    from .serve.client import open as open_in_process

    return open_in_process(path, **client_kwargs)


def from_catalog(
    uri: str | _Path, readable_storage: list[str | _Path] | tuple = (), **client_kwargs: _Any
) -> BaseClient:
    """Open a Tiled catalog (``sqlite:///PATH`` or a path to the file, ``postgresql://...``,
    as Tiled's own ``tiled serve catalog`` takes it) as the normal Tiled client, served
    in-process and read-only, as :func:`open` serves an archive. Returns the root node's
    client; close it (or use it as a context manager) to release the catalog.

    Assets are read only when the file they name, symbolic links resolved, lies inside one of
    the ``readable_storage`` folders (else ``ArchiveError`` TA-E923 on that read), and their
    files are checked as an archive's are before Tiled's adapters read them. ``client_kwargs``
    go to ``tiled.client.from_context``. Raises ``ArchiveError`` TA-E922 when the catalog
    cannot be opened (no such file, server down, another schema revision)."""
    from .serve.client import from_catalog as from_catalog_in_process

    return from_catalog_in_process(uri, readable_storage, **client_kwargs)


def browse(source: _Any, dest: str | _Path | None = None, **options: _Any) -> BaseClient:
    """The normal Tiled client over a local mirror of a Tiled server (its URL, or a client of
    one of its containers) kept under the cache root: listings fetched as you walk the tree,
    data as reads need it, both kept, so nothing is fetched twice and it works offline
    (``offline=True``); ``api_key=`` and Tiled's ``from_uri`` keywords as Tiled takes them. See
    :func:`tiled_archive.browser.browse`."""
    from .browser import browse as browse_mirror

    return browse_mirror(source, dest, **options)


def download(source: _Any, dest: str | _Path | None = None, **options: _Any) -> _Path:
    """Download a node of a live Tiled server (a container, a search result or one array or
    table) into an archive at ``dest`` (``*.zip`` or a directory; None: a directory under the
    cache root named by server and node, replaced when downloaded again), or with
    ``catalog=URI, data_dir=DIR`` (and ``at=PATH``) straight into a Tiled catalog (SQLite or
    PostgreSQL); see :func:`tiled_archive.downloader.download` for the options. A client of
    :func:`browse` reads through its mirror: nothing read before is fetched again."""
    from .downloader import download as download_archive

    if dest is None and options.get("catalog") is None:
        from .downloader import default_destination

        dest = default_destination(source)
        options.setdefault("force", True)
    return download_archive(source, dest, **options)


def update(path: str | _Path, **options: _Any) -> UpdateResult:
    """Bring an archive :func:`download` wrote (ZIP or directory, complete or lazy) up to date
    with the server node it came from: only changed files are fetched, the new archive put in
    place in one step, and each added, removed and changed node named in the result (``str()``
    of it is a summary). ``api_key=``, ``dry_run=True`` and more: see
    :func:`tiled_archive.downloader.update.update`."""
    from .downloader.update import update as update_archive

    return update_archive(path, **options)


def diff(before: str | _Path, after: str | _Path) -> Differences:
    """How archive ``after`` differs from ``before`` (any forms, local or remote), node by
    node: ``.added``, ``.removed``, ``.changed`` (metadata keys, specs, structure, data by
    digest), ``.same``, ``.to_json()``. See :func:`tiled_archive.reader.diff.diff_archives`."""
    from .reader.diff import diff_archives

    return diff_archives(before, after)


def validate(path: str | _Path, *, fast: bool = False, strict: bool = False) -> Report:
    """Check an archive against every rule of the spec; returns a ``Report`` of every problem
    (``report.valid``, ``report.errors``, ``report.warnings``, ``report.to_json()``). ``fast``
    compares sizes and hashes nothing; with ``strict`` warnings make ``report.valid`` False.
    See :func:`tiled_archive.validator.validate`."""
    from .validator import validate as validate_archive

    return validate_archive(path, fast=fast, strict=strict)
