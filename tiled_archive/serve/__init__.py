"""Serving archives with Tiled. ``tiled_archive.serve:archive`` is the tree a Tiled
configuration mounts an archive with (:func:`tiled_archive.serve.mount.archive`)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "archive":  # imported on use: the package's other modules do not need it
        from .mount import archive

        return archive
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
