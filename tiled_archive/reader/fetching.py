"""Whether an incomplete archive may fetch from its origin (spec 4.1): a lazy archive this
user's own download made may; one made elsewhere contacts nothing until the user says so; and
offline (``offline=True`` or ``TILED_ARCHIVE_OFFLINE=1``) nothing ever does.

Which archives this user made is kept under the cache root: one marker per archive folder and
origin, so an archive put in another's place, naming another origin, is not trusted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..files.cache_root import cache_root
from ..rules.names import FETCH_WORK_DIR
from ..sources.lazy import FetchPolicy


@dataclass(frozen=True)
class FetchOptions:
    """What the user said about fetching when opening a lazy archive: ``fetch`` (None: only
    an archive this user's download made), ``offline`` (None: the environment), the API key
    for the origin, and the cap on fetched bytes."""

    fetch: bool | None = None
    offline: bool | None = None
    api_key: str | None = None
    max_bytes: int | None = None


#: Set to 1 (or true, yes) to keep every lazy archive offline.
OFFLINE_ENV = "TILED_ARCHIVE_OFFLINE"


def _marker(root: Path, origin: str) -> Path:
    key = hashlib.sha256(f"{os.path.realpath(root)}\0{origin}".encode()).hexdigest()
    return cache_root() / "lazy-archives" / key


def trust(root: Path, origin: str) -> None:
    """Record that this user's download made the lazy archive at ``root`` from ``origin``."""
    marker = _marker(root, origin)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.path.realpath(root)}\n{origin}\n", encoding="utf-8")


def is_trusted(root: Path, origin: str) -> bool:
    return _marker(root, origin).is_file()


def offline_from_environment() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fetch_policy(
    root: Path,
    origin: str,
    *,
    fetch: bool | None = None,
    offline: bool | None = None,
    api_key: str | None = None,
    max_bytes: int | None = None,
) -> FetchPolicy:
    """The policy of the lazy archive at ``root``: ``offline`` (default: the environment)
    wins; else ``fetch`` (default: whether this user's download made it). ``api_key``
    defaults to ``TILED_API_KEY``. Fetching for an archive made elsewhere makes it this
    user's: its work folder is discarded first (its partial files are not trusted)."""
    api_key = api_key or os.environ.get("TILED_API_KEY") or None
    own = is_trusted(root, origin)
    if offline if offline is not None else offline_from_environment():
        return FetchPolicy(False, "fetching is off (offline)", api_key, max_bytes, own_work=own)
    if fetch is None:
        fetch = own
    if not fetch:
        why = "this archive was not made by your download: it fetches only when told to"
        return FetchPolicy(False, why, api_key, max_bytes, own_work=own)
    if not own:
        # Told to fetch for an archive made elsewhere: its work folder (partial files and
        # what they are said to hold) came with it and is not trusted; begun afresh, ours.
        work = root / FETCH_WORK_DIR
        if work.is_symlink():
            work.unlink()  # never followed, not even to empty what it leads to
        shutil.rmtree(work, ignore_errors=True)
        trust(root, origin)
    return FetchPolicy(True, "", api_key, max_bytes, own_work=True)
