"""tiled-archive: a versioned archive format for offline Tiled data, and its reference
implementation (writer, reader, validator, in-process server).

>>> import tiled_archive
>>> with tiled_archive.open("scans.zip") as client:   # the normal Tiled client, no server
...     client["scan1"]["primary"][:10]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["download", "open", "validate", "__version__"]


def open(path: str | Path, **client_kwargs: Any) -> Any:  # noqa: A001 -- mirrors builtins.open
    """Open an archive (directory or ZIP) as a Tiled client served in-process; see
    :func:`tiled_archive.asgi.open`."""
    from .asgi import open as open_in_process

    return open_in_process(path, **client_kwargs)


def download(source: Any, dest: str | Path, **options: Any) -> Path:
    """Download a node of a live Tiled server (a container, a search result or one array or
    table) into an archive at ``dest`` (``*.zip`` or a directory); see
    :func:`tiled_archive.downloader.download` for the options."""
    from .downloader import download as download_archive

    return download_archive(source, dest, **options)


def validate(path: str | Path, *, fast: bool = False) -> Any:
    """Check an archive against every rule of the spec; returns a report of all problems.
    See :func:`tiled_archive.validator.validate`."""
    from .validator import validate as validate_archive

    return validate_archive(path, fast=fast)
