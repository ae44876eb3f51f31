"""Where tiled-archive keeps what it caches on this machine (``TILED_ARCHIVE_CACHE``, else the
platform's user cache folder): verified catalog copies, member copies, checked verdicts, blobs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where verified copies of ZIP catalogs are kept (``TILED_ARCHIVE_CACHE`` overrides)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("TILED_ARCHIVE_CACHE") or user_cache_dir("tiled-archive"))
