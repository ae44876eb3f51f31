"""Remote reads move what they need: a file on a real web server on loopback (uvicorn +
Starlette's StaticFiles, as tests/e2e/test_remote.py serves archives), read through
``HTTPFile`` behind a proxy that counts the bytes on the wire (``CountingProxy``), the server
recording each request's ``Range``. What is read must equal the file's bytes.
"""

from __future__ import annotations

import random
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiled_archive.sources.ranges.blocks import AHEAD_FIRST, AHEAD_MAX, ALIGN
from tiled_archive.sources.ranges.http import HTTPFile
from tiled_archive.sources.zip import ZipSource
from tiled_archive.testing import CountingProxy

from ..servers import StaticServer

MIB = 1 << 20
#: The served file: 24 MiB of random bytes; the reader's tail (its last MiB) is read on opening.
SIZE = 24 * MIB
#: The issue's bound for a small random read, on the wire (headers included).
SMALL_READ_BOUND = 64_000


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[StaticServer, bytes, Path]]:
    www = tmp_path_factory.mktemp("www")
    data = random.Random(0).randbytes(SIZE)
    (www / "blob.bin").write_bytes(data)
    server = StaticServer(www)
    yield server, data, www
    server.stop()


@dataclass
class Remote:
    """An opened remote file, the proxy it reads through and the server's record."""

    file: HTTPFile
    proxy: CountingProxy
    server: StaticServer
    data: bytes

    def read(self, offset: int, size: int) -> tuple[int, list[tuple[int, int]]]:
        """Read and check ``size`` bytes at ``offset``: the bytes on the wire and the ranges
        asked for, ``(first, last)``, meanwhile."""
        moved, asked = self.proxy.received, len(self.server.requests)
        assert self.file.pread(offset, size) == self.data[offset : offset + size]
        return self.proxy.received - moved, ranges(self.server.requests[asked:])


def ranges(requests: list[str | None]) -> list[tuple[int, int]]:
    found = [re.fullmatch(r"bytes=(\d+)-(\d+)", asked or "") for asked in requests]
    assert all(found), requests
    return [(int(m[1]), int(m[2])) for m in found if m]


@pytest.fixture
def remote(served) -> Iterator[Remote]:
    server, data, _ = served
    with CountingProxy(server.port) as proxy:
        file = HTTPFile(f"{proxy.url}/blob.bin")
        try:
            yield Remote(file, proxy, server, data)
        finally:
            file.close()


def test_a_small_random_read_moves_about_its_own_bytes(remote):
    picker = random.Random(1)
    for _ in range(50):
        offset = picker.randrange(0, SIZE - MIB - 512)
        moved, asked = remote.read(offset, 512)
        assert len(asked) <= 1
        assert moved <= SMALL_READ_BOUND, (offset, moved)
    # Across an alignment boundary: both sides, still one request.
    moved, asked = remote.read(5 * MIB + 3 * ALIGN - 256, 512)
    assert len(asked) == 1 and moved <= SMALL_READ_BOUND


def test_sequential_reads_grow_the_read_ahead_to_its_cap(remote):
    start, step, total = 3 * MIB + 100, 64 << 10, 16 * MIB
    moved = 0
    asked: list[tuple[int, int]] = []
    for offset in range(start, start + total, step):
        wire, requests = remote.read(offset, step)
        moved += wire
        asked += requests
    sizes = [last - first + 1 for first, last in asked]
    assert sizes == sorted(sizes), sizes  # growing, never shrinking
    assert max(sizes) >= AHEAD_MAX
    # Doubling from the first read-ahead to the cap, then one request per cap's worth.
    ramp = (AHEAD_MAX // AHEAD_FIRST).bit_length()
    assert len(asked) <= ramp + total // AHEAD_MAX + 1, sizes
    # Never much more than was read: at most the last read-ahead beyond it.
    assert moved <= total + AHEAD_MAX + 64_000
    # The run continues the bytes read ahead: each request starts where the last ended.
    assert all(b[0] == a[1] + 1 for a, b in zip(asked, asked[1:], strict=False)), asked


def test_a_random_seek_resets_the_read_ahead(remote):
    for offset in range(0, 10 * MIB, 64 << 10):
        remote.read(offset, 64 << 10)
    far = 20 * MIB + 12345  # past what the run read ahead (at most 8 MiB), before the tail
    moved, asked = remote.read(far, 512)
    assert len(asked) == 1 and moved <= SMALL_READ_BOUND
    # From there a new run: it starts with the first read-ahead again, not the cap.
    moved, asked = remote.read(far + 512, 64 << 10)
    assert len(asked) == 1
    first, last = asked[0]
    assert last - first + 1 <= (64 << 10) + AHEAD_FIRST + 2 * ALIGN
    assert moved <= 4 * (64 << 10)


@pytest.mark.parametrize("size", [300 << 10, 4 * MIB + 1, 12 * MIB + 7])
def test_a_large_read_is_one_request_for_its_bytes(remote, size):
    offset = 2 * MIB + 999
    moved, asked = remote.read(offset, size)
    assert asked == [(offset, offset + size - 1)]
    assert moved <= size + 2_000  # the answer's headers
    assert remote.file.requests == 2  # the tail on opening, then this read


def test_interleaved_runs_each_read_ahead(remote):
    """Two readers taking turns (two members, two threads' reads) are two runs."""
    step = 64 << 10
    a, b = 1 * MIB, 9 * MIB + 50
    asked: list[tuple[int, int]] = []
    for index in range(64):
        asked += remote.read(a + index * step, step)[1]
        asked += remote.read(b + index * step, step)[1]
    # 4 MiB each, read ahead on both: far fewer requests than the 128 reads.
    assert len(asked) <= 2 * ((AHEAD_MAX // AHEAD_FIRST).bit_length() + 1), asked


def test_members_read_in_archive_order_are_one_run(served):
    """Whole members read one after another: each next member's local header comes with the
    read-ahead, as its data does (no request per header, no new ramp per member)."""
    server, _, www = served
    members = {
        f"data/part_{index}.bin": random.Random(index).randbytes(2 * MIB) for index in range(8)
    }
    with zipfile.ZipFile(www / "parts.zip", "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with (
        CountingProxy(server.port) as proxy,
        ZipSource(HTTPFile(f"{proxy.url}/parts.zip")) as source,
    ):
        opened, before = source.file.requests, proxy.received
        for name, data in members.items():
            with source.open(name) as stream:
                assert stream.read() == data
        requests = source.file.requests - opened
        moved = proxy.received - before
    assert requests <= (AHEAD_MAX // AHEAD_FIRST).bit_length() + 16 * MIB // AHEAD_MAX + 1
    assert moved <= 16 * MIB + 64_000
