"""Read archives: open one from any byte source (:func:`open_archive`, checking its layout,
manifest and catalog) and say what it holds (:mod:`.info`)."""

from __future__ import annotations

from .archive import REMOTE_ONLY_WARNINGS, Archive, ArchiveWarning, open_archive
from .fetching import FetchOptions

__all__ = ["REMOTE_ONLY_WARNINGS", "Archive", "ArchiveWarning", "FetchOptions", "open_archive"]
