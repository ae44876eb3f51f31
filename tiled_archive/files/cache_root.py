"""Where tiled-archive keeps what it caches on this machine (``TILED_ARCHIVE_CACHE``, else the
platform's user cache folder): verified catalog copies, member copies, checked verdicts, blobs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path


def cache_root() -> Path:
    """Where verified copies of ZIP catalogs are kept (``TILED_ARCHIVE_CACHE`` overrides)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("TILED_ARCHIVE_CACHE") or user_cache_dir("tiled-archive"))


def named_folder(kind: str, words: Iterable[str], identity: str) -> Path:
    """A folder under the cache root's ``kind`` folder, named by ``words`` (readable: a
    listing says what it holds) and a short digest of ``identity`` (what it is the folder
    of: two spellings of a name never share a folder by accident)."""
    name = re.sub(r"[^A-Za-z0-9-]+", "_", "/".join(w for w in words if w)).strip("_")[:80]
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return cache_root() / kind / f"{name}-{digest}"
