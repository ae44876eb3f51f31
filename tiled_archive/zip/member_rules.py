"""The format's rules for the members of an archive's ZIP (spec 6), over parsed records.

What a member may be (a regular file or a directory entry, STORED or deflated, unencrypted, no
data descriptor: TA-E102 to TA-E105, TA-E110, TA-W101), where the archive's own files must sit
(``mimetype`` first: TA-E101; the tag files and ``catalog.db`` before the payload: TA-W103)
and where a STORED member's data starts (TA-W102). :func:`member_problems` runs them all;
parsing the ZIP is :mod:`.parser`'s.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator

from ..rules.names import ALIGNMENT, CATALOG_NAME, MIMETYPE_NAME, TAG_FILES, TAG_MANIFEST_NAME
from ..rules.paths import case_collisions, path_problems
from ..rules.problems import Problem
from . import records as zf
from .parser import ZipRecord

#: The archive's own files, which a remote reader fetches in its first request.
TAG_NAMES = frozenset((*TAG_FILES, TAG_MANIFEST_NAME))


def member_problems(
    entries: list[ZipRecord], first_local_extra: int | None, *, lazy: bool
) -> tuple[list[Problem], dict[str, ZipRecord]]:
    """Every problem of the records under the format's rules, and the readable members by
    name. ``lazy``: local headers are read on use, so a record's data offset is not known."""
    problems: list[Problem] = []
    readable: dict[str, ZipRecord] = {}
    problems.extend(first_member_problems(entries, first_local_extra))
    seen: set[str] = set()
    for index, record in enumerate(entries):
        if record.is_dir:
            problems.extend(directory_problems(record))
            continue
        found = path_problems(record.name)
        if found:
            problems.extend(found)
        if record.name in seen:
            problems.append(Problem("TA-E105", record.name, "duplicate member name"))
            continue
        seen.add(record.name)
        found, usable = file_problems(record)
        problems.extend(found)
        if usable and (record.data_offset is not None or lazy):
            readable[record.name] = record
            if record.data_offset and record.data_offset % ALIGNMENT:  # else none, quickly
                problems.extend(alignment_problems(record, index))
    problems.extend(case_collisions(seen))
    problems.extend(head_order_problems(entries))
    return problems, readable


def first_member_problems(
    entries: list[ZipRecord], first_local_extra: int | None
) -> Iterator[Problem]:
    """TA-E101: ``mimetype`` first in the file, STORED, with no extra field."""
    if not entries:
        yield Problem("TA-E101", None, "the ZIP has no members")
        return
    first = entries[0]
    if (
        first.name != MIMETYPE_NAME
        or first.method != zf.STORED
        or first_local_extra != 0
        or any(entry.header_offset < first.header_offset for entry in entries)
    ):
        yield Problem(
            "TA-E101",
            first.name,
            "the first member must be `mimetype`, STORED, first in the file, no extra field",
        )


def alignment_problems(record: ZipRecord, index: int) -> Iterator[Problem]:
    """TA-W102: a STORED member's data (but the first member's, ``mimetype``) starts at a
    multiple of the alignment, so it can be mapped."""
    first_mimetype = index == 0 and record.name == MIMETYPE_NAME
    if (
        record.method == zf.STORED
        and not first_mimetype
        and record.data_offset is not None
        and record.data_offset % ALIGNMENT
    ):
        yield Problem(
            "TA-W102",
            record.name,
            f"data starts at byte {record.data_offset}, not a multiple of {ALIGNMENT}",
        )


def head_order_problems(entries: list[ZipRecord]) -> Iterator[Problem]:
    """TA-W103: the tag files and catalog.db before every payload member (one request
    fetches them from a web server)."""
    head = TAG_NAMES | {CATALOG_NAME}
    payload = [r.header_offset for r in entries if r.name not in head and not r.is_dir]
    if not payload:
        return
    late = [r for r in entries if r.name in head and r.header_offset > min(payload)]
    if late:
        first = min(late, key=lambda r: r.header_offset)
        yield Problem(
            "TA-W103", first.name, f"comes after payload members ({len(late)} such members)"
        )


def directory_problems(record: ZipRecord) -> Iterator[Problem]:
    """A directory entry: an allowed path, no bytes, a directory (or no file type)."""
    yield from path_problems(record.name[:-1])
    if record.size or record.compressed_size:
        yield Problem("TA-E104", record.name, f"directory entry holds {record.size} bytes")
    kind = stat.S_IFMT(record.external_attr >> 16)
    if kind not in (0, stat.S_IFDIR):
        yield Problem("TA-E104", record.name, f"directory entry of file type {kind:o}")


def file_problems(record: ZipRecord) -> tuple[list[Problem], bool]:
    """A file member's problems, and whether it is readable (a regular file in a method this
    reader decodes, unencrypted, sizes consistent)."""
    problems: list[Problem] = []

    def add(code: str, message: str) -> None:
        problems.append(Problem(code, record.name, message))

    kind = stat.S_IFMT(record.external_attr >> 16)
    if record.flags & zf.FLAG_DESCRIPTOR:
        add("TA-E110", "sets the data-descriptor flag (bit 3)")
    if record.flags & zf.FLAG_ENCRYPTED or record.method == zf.AES:
        add("TA-E103", "encrypted")
        return problems, False
    if record.method not in (zf.STORED, zf.DEFLATED, zf.DEFLATED64):
        add("TA-E102", f"compression method {record.method}")
        return problems, False
    if record.method != zf.STORED:
        add("TA-W101", "compressed; it can only be read sequentially")
    if kind not in (0, stat.S_IFREG):
        add("TA-E104", f"not a regular file (file type {kind:o})")
        return problems, False
    if record.method == zf.STORED and record.size != record.compressed_size:
        add("TA-E100", "STORED member with two different sizes")
        return problems, False
    return problems, True
