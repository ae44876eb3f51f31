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
from concurrent.futures import ThreadPoolExecutor
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
    opened: tuple[int, int] = (0, 0)  # bytes on the wire and requests once open

    def __post_init__(self) -> None:
        self.opened = (self.proxy.received, len(self.server.requests))

    def read(self, offset: int, size: int) -> tuple[int, list[tuple[int, int]]]:
        """Read and check ``size`` bytes at ``offset``: the bytes on the wire and the ranges
        asked for, ``(first, last)``, meanwhile (a read that reads ahead asks for more in the
        background: see :meth:`finish`)."""
        moved, asked = self.proxy.received, len(self.server.requests)
        assert self.file.pread(offset, size) == self.data[offset : offset + size]
        return self.proxy.received - moved, ranges(self.server.requests[asked:])

    def finish(self) -> tuple[int, list[tuple[int, int]]]:
        """Close the file (read-ahead under way ends first): the bytes on the wire and the
        ranges asked for since it was opened, in the order of the file."""
        self.file.close()
        moved, asked = self.opened
        return self.proxy.received - moved, sorted(ranges(self.server.requests[asked:]))


def ranges(requests: list[str | None]) -> list[tuple[int, int]]:
    found = [re.fullmatch(r"bytes=(\d+)-(\d+)", asked or "") for asked in requests]
    assert all(found), requests
    return [(int(m[1]), int(m[2])) for m in found if m]


def sizes(asked: list[tuple[int, int]]) -> list[int]:
    return [last - first + 1 for first, last in asked]


#: Windows of a run's read-ahead before it reaches the cap (64 KiB, 128 KiB, ... 4 MiB).
RAMP = [AHEAD_FIRST << k for k in range((AHEAD_MAX // AHEAD_FIRST).bit_length() - 1)]


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
    for offset in range(start, start + total, step):
        remote.read(offset, step)
    moved, asked = remote.finish()
    # Each request starts where the last ended: nothing is fetched twice.
    assert all(b[0] == a[1] + 1 for a, b in zip(asked, asked[1:], strict=False)), asked
    assert asked[0][0] <= start and asked[-1][1] >= start + total - 1
    # The first read moves about its own bytes; then windows doubling up to the cap.
    assert sizes(asked)[0] <= step + 2 * ALIGN
    assert set(RAMP) <= set(sizes(asked)) and max(sizes(asked)) == AHEAD_MAX, sizes(asked)
    assert len(asked) <= 2 + len(RAMP) + total // AHEAD_MAX + 1, sizes(asked)
    # Never much more than was read: the read-ahead goes at most two windows beyond it.
    assert moved <= total + 2 * AHEAD_MAX + 100_000


def test_a_random_seek_resets_the_read_ahead(remote):
    step = 64 << 10
    for offset in range(0, 4 * MIB, step):
        remote.read(offset, step)
    far = 20 * MIB + 12345  # past what the run read ahead, before the tail
    remote.read(far, 512)
    for offset in range(far + 512, far + 512 + 4 * step, step):  # a new run from there
        remote.read(offset, step)
    _, asked = remote.finish()
    before, after = [r for r in asked if r[1] < far], [r for r in asked if r[1] >= far]
    assert max(sizes(before)) >= MIB  # the first run had grown its read-ahead ...
    assert sizes(after)[0] <= 2 * ALIGN  # ... the seek moved its own bytes ...
    # ... and the new run starts again from the first window, not the cap.
    assert max(sizes(after)) <= 4 * AHEAD_FIRST, sizes(after)
    assert sum(sizes(after)) <= 512 + 4 * step + 8 * AHEAD_FIRST


@pytest.mark.parametrize("size", [300 << 10, 4 * MIB + 1, 12 * MIB + 7])
def test_a_large_read_is_one_request_for_its_bytes(remote, size):
    offset = 2 * MIB + 999
    moved, asked = remote.read(offset, size)
    assert asked == [(offset, offset + size - 1)]
    assert moved <= size + 2_000  # the answer's headers
    assert remote.file.requests == 2  # the tail on opening, then this read
    # One starting inside it (not near its end) is random too: its bytes alone, no read-ahead.
    again = offset + size // 3
    remote.read(again, size)
    assert remote.finish()[1] == sorted([(offset, offset + size - 1), (again, again + size - 1)])


def test_interleaved_runs_each_read_ahead(remote):
    """Two readers taking turns (two members, two threads' reads) are two runs."""
    step = 64 << 10
    a, b = 1 * MIB, 9 * MIB + 50
    for index in range(64):
        remote.read(a + index * step, step)
        remote.read(b + index * step, step)
    _, asked = remote.finish()
    # 4 MiB each, read ahead on both: far fewer requests than the 128 reads.
    assert len(asked) <= 2 * (2 + len(RAMP)), asked


def test_threads_reading_at_once_get_their_bytes(remote):
    """Four threads, each reading its own quarter on in odd steps (runs, read-ahead under way
    for several at once, reads waiting for it) and now and then elsewhere."""

    def reader(index: int) -> None:
        picker = random.Random(index)
        offset, stop = index * 5 * MIB, (index + 1) * 5 * MIB
        while offset < stop:
            size = picker.choice([512, 10_000, 64 << 10, 300 << 10])
            remote.read(offset, size)
            offset += size
            if picker.random() < 0.05:
                remote.read(picker.randrange(0, SIZE - size), size)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(reader, range(4)))
    moved, _ = remote.finish()
    assert moved <= SIZE + 4 * MIB  # no bytes fetched twice, but for some random reads'


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
    requests = source.file.requests - opened  # the file closed: its read-ahead ended
    assert requests <= 3 + len(RAMP) + 16 * MIB // AHEAD_MAX
    assert proxy.received - before <= 16 * MIB + 64_000
