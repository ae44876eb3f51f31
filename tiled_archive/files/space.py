"""A full disk, wherever it strikes, as a coded error (TA-E906) naming the file and the space
left on its filesystem."""

from __future__ import annotations

import errno
import os

from ..rules.problems import ArchiveError

#: How SQLite says its disk is full (its error has no errno).
_SQLITE_FULL = "database or disk is full"


def out_of_space(
    err: BaseException, path: str | os.PathLike[str] | None = None
) -> ArchiveError | None:
    """TA-E906 for an error that says the disk or the quota is full (``ENOSPC``, ``EDQUOT``,
    SQLite's "database or disk is full"), naming the file and the space left on its
    filesystem; None for any other error."""
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (full or _SQLITE_FULL in str(err)):
        return None
    where = getattr(err, "filename", None) or path
    shown = os.fspath(where) if where is not None else None
    message = "no space left on the device" if full and err.errno == errno.ENOSPC else str(err)
    if isinstance(err, OSError) and err.errno == errno.EDQUOT:
        message = "the disk quota is exceeded"
    folder = os.path.dirname(os.path.abspath(shown)) if shown else None
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    if folder:
        try:
            stats = os.statvfs(folder)
            free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
            message += f" ({_size(free)} free of {_size(total)} on its filesystem)"
        except OSError:
            pass
    return ArchiveError("TA-E906", shown, message)


def _size(count: int) -> str:
    """Bytes for a person: kB below a megabyte, MB below a gigabyte, else GB (decimal)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


__all__ = ["out_of_space"]
