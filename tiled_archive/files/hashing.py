"""Hashing copies of files: the one read loop that sizes, hashes (SHA-256, and CRC-32 for ZIP
headers) and optionally copies, shared by the writer, the reader and the downloader."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# ZIP's CRC-32 (``crc32(data, running)``, as zlib's) for every caller: zlib-ng's, with SIMD,
# is four times zlib's speed here (16 GB/s against 3.9), so the full validation of a ZIP costs
# its SHA-256 pass and little more.
from zlib_ng.zlib_ng import crc32


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file at ``path``, hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


CHUNK = 1 << 20


def copy_hashing(
    source: BinaryIO,
    sink: BinaryIO | None,
    advance: Callable[[int], None] = lambda n: None,
    *,
    with_crc32: bool = False,
) -> tuple[int, str, int]:
    """Read ``source`` to its end (copying into ``sink``): size, SHA-256 hex and, only when
    asked (ZIP local headers need it), CRC-32 (else 0)."""
    sha, crc, size = hashlib.sha256(), 0, 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        if with_crc32:
            crc = crc32(chunk, crc)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
        advance(len(chunk))
    return size, sha.hexdigest(), crc
