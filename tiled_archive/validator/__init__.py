"""Check an archive against every rule of the format and report every problem found.

``validate(path)`` never stops at the first problem and never raises because an archive is bad:
each finding becomes a :class:`~tiled_archive.rules.Problem` (code, member, message) in the
:class:`Report`. Only what stops the run itself (the path cannot be read: permissions, I/O errors)
raises ``OSError``.

How the checks fit together:

- ZIP structure problems come from :class:`~tiled_archive.sources.zip.ZipSource`, which finds them
  while opening the file; symbolic links and special files of a directory archive from
  :class:`~tiled_archive.sources.directory.DirectorySource`. Nothing here parses ZIP headers.
- Every later check works on what earlier ones established (the listing, the manifest) and is
  skipped when what it needs is broken, so a missing manifest is one ``TA-E002``, not a cascade.
- Full mode reads every member once in a pool of ``WORKERS`` threads: SHA-256 of every file and,
  in a ZIP, the CRC-32 of every member. ``hashlib`` and ``zlib_ng`` release the GIL on large buffers
  and blocks are read with ``os.preadv`` (``ByteSource.read_into`` for a ZIP) into a buffer each
  thread reuses, so both cores hash. One file's digest is sequential, so the pool spreads files,
  largest first. ``fast`` mode hashes nothing: sizes and Payload-Oxum only.
- ``catalog.db`` is opened by SQLite with ``immutable=1``, which never writes beside it (no
  journal, ``-wal`` or ``-shm`` file, even for a WAL database): in place in a directory archive,
  from a temporary copy (made while hashing it) for a ZIP. The catalog checks run in the main
  thread while the pool hashes the payload.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..sources import is_remote
from .checker import Checker
from .conformance import FixtureCase, fixture_cases, is_fixture_tree, run_cases
from .report import Report, report_schema

if TYPE_CHECKING:
    from rich.progress import Progress


def validate(
    path: str | Path,
    *,
    fast: bool = False,
    strict: bool = False,
    complete: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Report:
    """Check the directory or ZIP archive at ``path`` against every rule of the format.

    Full mode verifies every byte (SHA-256 against the manifest, CRC-32 of ZIP members); with
    ``fast`` only sizes and Payload-Oxum are compared, nothing is hashed, and the catalog gets
    SQLite's ``quick_check`` instead of ``integrity_check``. Every other rule is checked in both.
    With ``strict`` the report counts warnings as errors (``report.valid`` is False when any
    rule's SHOULD is broken). ``progress`` (a started rich Progress) gets a task for the
    hashing when it is long. ``path`` may be the http(s) or s3 URL of a ZIP (read by range
    requests; ``storage_options`` as :func:`tiled_archive.open` takes them). An incomplete (lazy)
    archive's absent files are warnings (TA-W310), and with ``complete`` an error (TA-E940).

    Raises ``OSError`` only when the archive cannot be read at all (e.g. permissions).
    """
    start = time.perf_counter()
    location = path if is_remote(path) else Path(path)
    checker = Checker(
        location,
        fast=fast,
        progress=progress,
        storage_options=storage_options,
        complete=complete,
    )
    checker.run()
    problems = sorted(
        dict.fromkeys(checker.problems), key=lambda p: (p.code, p.path or "", p.message)
    )
    return Report(
        path=str(path),
        form=checker.form,
        fast=fast,
        problems=problems,
        format_version=checker.format_version,
        bytes_verified=checker.bytes_verified,
        seconds=time.perf_counter() - start,
        strict=strict,
    )


__all__ = [
    "Report",
    "validate",
    "report_schema",
    "FixtureCase",
    "fixture_cases",
    "is_fixture_tree",
    "run_cases",
]
