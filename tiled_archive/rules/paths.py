"""The format's path rules (spec 2): which member paths are allowed, which escape a folder,
which collide by case, and how catalog asset URIs map to member paths (archive form and
relocated form).

Pure: nothing here touches an archive.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePath, PurePosixPath

from .codes import Severity
from .names import (
    DATA_DIR,
    MAX_SEGMENT_BYTES,
    RELOCATED_SCHEMES,
)
from .problems import ArchiveError, Problem

# Characters a path may not hold: control characters; `?` and `#`, which Tiled's unescaped
# `file://` URIs cannot carry; `%` and `\`, which BagIt and `sha256sum` lines would escape.
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\?#%]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_PLAIN_SEGMENTS = frozenset(("", ".", ".."))


# -- Paths ----------------------------------------------------------------------------------


def path_problems(path: str) -> list[Problem]:
    """Check one archive path (``/``-separated, relative to the archive root) against the rules."""
    problems = []
    if FORBIDDEN_CHARACTERS.search(path) or _has_surrogates(path):
        problems.append(Problem("TA-E200", path, "forbidden character or undecodable byte"))
    segments = path.split("/")
    if path.startswith("/") or _DRIVE.match(path) or not _PLAIN_SEGMENTS.isdisjoint(segments):
        problems.append(Problem("TA-E201", path, "absolute path or empty, '.' or '..' segment"))
    if len(path) * 4 > MAX_SEGMENT_BYTES and any(  # a UTF-8 character is at most 4 bytes
        len(s.encode("utf-8", "surrogateescape")) > MAX_SEGMENT_BYTES for s in segments
    ):
        problems.append(Problem("TA-E202", path, f"segment longer than {MAX_SEGMENT_BYTES} bytes"))
    if not problems and not unicodedata.is_normalized("NFC", path):
        problems.append(Problem("TA-W200", path, "not in Unicode NFC"))
    return problems


# Undecodable bytes arrive as lone surrogates (os.fsdecode, surrogateescape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def escapes_folder(relative: str) -> bool:
    """Whether a path taken relative to a folder (a Zarr store key, a file of a directory
    asset) could leave it: empty, ``.`` or ``..`` segments, absolute, backslashes or NUL."""
    return (
        relative.startswith("/")
        or "\\" in relative
        or "\x00" in relative
        or any(s in ("", ".", "..") for s in relative.split("/"))
    )


def check_path(path: str) -> str:
    """Return ``path`` if it is a valid archive path, else raise the first error found."""
    for problem in path_problems(path):
        if problem.severity is Severity.ERROR:
            raise ArchiveError(problem.code, problem.path, problem.message)
    return path


def case_collisions(paths: Iterable[str]) -> Iterator[Problem]:
    """Paths that collide on a case-insensitive filesystem (TA-W201)."""
    seen: dict[str, str] = {}
    for path in paths:
        folded = path.casefold()
        if folded in seen and seen[folded] != path:
            yield Problem("TA-W201", path, f"differs from {seen[folded]!r} only by case")
        seen.setdefault(folded, path)


def is_payload_path(path: str) -> bool:
    return path.startswith(DATA_DIR + "/")


# -- Asset URIs in catalog.db ---------------------------------------------------------------


def member_from_data_uri(data_uri: str) -> str:
    """The archive path a canonical (relative) ``data_uri`` names, or raise TA-E503.

    In an archive, ``assets.data_uri`` is the archive path itself (``data/...``), unescaped like
    Tiled's own ``file://`` URIs. Relocated directory archives are handled by the catalog layer.
    """
    if not is_payload_path(data_uri) or any(
        p.severity is Severity.ERROR for p in path_problems(data_uri)
    ):
        raise ArchiveError("TA-E503", data_uri, "asset data_uri is not a path inside data/")
    return data_uri


def is_relocated(data_uri: str) -> bool:
    """Whether an asset URI is in relocated form (absolute, by scheme; spec 3.1)."""
    return data_uri.startswith(tuple(f"{s}:" for s in RELOCATED_SCHEMES.values()))


def member_from_relocated(data_uri: str, root: PurePath) -> str:
    """The archive path an asset URI names in an archive whose relocated URIs are read
    relative to ``root`` (its resolved location, or the folder :func:`relocation_folder` found):
    a relocated (absolute) URI must lie under it; raise TA-E503 otherwise."""
    if not is_relocated(data_uri):
        return member_from_data_uri(data_uri)
    from tiled.utils import path_from_uri

    try:
        relative = path_from_uri(data_uri).relative_to(root)
    except ValueError:
        raise ArchiveError("TA-E503", data_uri, f"asset URI is outside {root}") from None
    return member_from_data_uri(relative.as_posix())


def relocated_path(data_uri: object) -> str | None:
    """The absolute path a relocated asset URI names, as text (None: not a relocated URI, or
    one no path can be read from; the per-asset checks report it)."""
    if not isinstance(data_uri, str) or not is_relocated(data_uri):
        return None
    from tiled.utils import path_from_uri

    try:
        return path_from_uri(data_uri).as_posix()
    except ValueError:  # urlparse refuses some malformed URIs
        return None


def relocation_folder(
    data_uris: Iterable[object], own: PurePath, holds: Callable[[str], bool]
) -> PurePath:
    """The folder a directory archive's relocated asset URIs are read relative to (spec 3.1).

    ``own`` (the archive's resolved location) when every relocated URI lies in its ``data/``:
    relocated form. Otherwise the folder the archive was relocated in before it was moved or
    copied, if there is one: the shortest folder F such that every relocated URI's path is
    ``F/data/P`` and ``holds("data/P")`` (the archive holds that payload file, or payload files
    below that folder). Failing both, ``own``: the URIs outside it are then TA-E503.

    F is found from the URIs' text and the archive's own list alone: nothing at F is looked at,
    let alone read, so a file that happens to exist there is never taken for the archive's own
    (the archive's member ``data/P`` is read instead); a URI naming a path the archive does not
    hold leaves no F at all.
    """
    paths = [path for path in map(relocated_path, data_uris) if path is not None]
    inside = own.as_posix().rstrip("/") + "/" + DATA_DIR + "/"
    if all(path.startswith(inside) for path in paths):
        return own
    moved = moved_folder(paths, holds)
    return own if moved is None else moved


def moved_folder(paths: list[str], holds: Callable[[str], bool]) -> PurePosixPath | None:
    """The shortest folder F such that each of ``paths`` (absolute, POSIX) is ``F/data/P`` with
    ``holds("data/P")``; None when no folder fits them all (or there are no paths).

    The candidates are the prefixes of the first path before a ``/data/`` segment: every path
    must share F, so the first one names every folder that could be it.
    """
    if not paths:
        return None
    marker = "/" + DATA_DIR + "/"
    first = paths[0]
    for start in (i for i in range(len(first)) if first.startswith(marker, i)):
        root = first[:start]
        if all(p.startswith(root + marker) and holds(p[len(root) + 1 :]) for p in paths):
            return PurePosixPath(root or "/")
    return None
