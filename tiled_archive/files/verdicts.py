"""Verdicts kept between runs, in the user cache: what was checked once is not checked again
while what was checked is unchanged.

Two kinds of key, each naming exactly what a verdict depends on:

- a file's *version* (:func:`version_of`): its resolved path, device, inode, size and
  modification and change times. The change time too: a file rewritten in place and given its
  old modification time back (``cp -p``, ``rsync --inplace -t``) has a new change time, which
  nothing can set back. A verified file (a catalog, its cached copy) is hashed again only when
  its version changed.
- bytes' *digest* and the rules' fingerprint (:func:`kept`): a manifest, a ZIP's central
  directory or a catalog whose SHA-256 was judged clean under these very rules (the sources of
  ``rules/`` and ``zip/``, and the Tiled release) is clean again; what is kept is the little
  the judgement produced (the warnings; the manifest's fields besides its file list).

A cache that cannot be written, or holds a damaged entry, costs only a check made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .cache_root import cache_root
from .work import partial_name

_PACKAGE = Path(__file__).resolve().parent.parent
#: The folders whose sources decide what a kept verdict says.
_RULE_FOLDERS = ("rules", "zip")


@cache
def rules_version() -> str:
    """What kept verdicts depend on besides the bytes judged: the sources of the format's
    rules and of the ZIP parser, and the Tiled release (its structure classes and schema)."""
    digest = hashlib.sha256(metadata.version("tiled").encode())
    for folder in _RULE_FOLDERS:
        for path in sorted((_PACKAGE / folder).iterdir()):
            if path.suffix in (".py", ".json", ".sql"):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:24]


def version_of(path: Path) -> str | None:
    """A key naming the file at ``path`` as it is now (None: there is no such file)."""
    try:
        stat = os.stat(path)
        resolved = os.path.realpath(path)
    except OSError:
        return None
    version = (resolved, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return hashlib.sha256(repr(version).encode()).hexdigest()


def known_sha256(version: str | None) -> str | None:
    """The SHA-256 the file of this :func:`version_of` was verified to have, if it was."""
    if version is None:
        return None
    try:
        return (cache_root() / "verified" / version).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def remember_sha256(path: Path, version: str | None, sha256: str) -> None:
    """Remember that the file at ``path`` has this SHA-256, hashed while it was ``version``
    (taken before hashing): kept only if it is still that version."""
    if version is not None and version_of(path) == version:
        _write(cache_root() / "verified" / version, sha256.encode("ascii"))


def kept(kind: str, sha256: str) -> Any | None:
    """What was kept of a clean verdict on bytes of digest ``sha256`` (JSON), under these rules;
    None when none was kept."""
    try:
        return json.loads((cache_root() / "verdicts" / kind / _name(sha256)).read_bytes())
    except (OSError, ValueError):
        return None


def keep(kind: str, sha256: str, value: Any) -> None:
    """Keep ``value`` (JSON) as the clean verdict on bytes of digest ``sha256``."""
    _write(cache_root() / "verdicts" / kind / _name(sha256), json.dumps(value).encode())


def _name(sha256: str) -> str:
    return f"{sha256}-{rules_version()}"


def _write(target: Path, data: bytes) -> None:
    """Write ``target`` whole (a temporary file renamed), or not at all."""
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(partial_name(target))  # a killed run's is swept
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
