"""Remote archives and streamed archives, on loopback, against plain HTTP in the same run.

    .venv/bin/python benchmarks/remote.py [--size-mb 256] [--reads 200]

Not a test: nothing is asserted about timings. Setup in a temporary folder: 16 ``.npy`` files
of random float64 (``--size-mb`` in all) archived by ``create()`` and packed to ZIP, published
by a web server in a process of its own (Starlette's StaticFiles under uvicorn:
``tiled_archive.testing.static_files_app``), and loaded (``load()``) into a catalog served by
stock ``tiled serve config`` with ``routers: [tiled_archive.serve.router:router]``.

Measured:

- opening: requests and bytes, cold (empty cache) and warm (catalog cached);
- random 1 MiB reads inside members (the same ``--reads`` (member, offset) pairs for every
  tool): ours remote (``ZipSource`` over ``HTTPFile``), plain ``httpx`` range GETs of the same
  absolute bytes (the baseline: 1.00), ours local (``pread``), ``remotezip`` and fsspec's
  ``zip::http://`` on the same server (anchors);
- bytes moved per byte read, counted on the wire by a proxy (``CountingProxy``) after the
  open, for small random reads (512 B, ``--reads`` of them), large random reads (4 MiB) and
  sequential reads (one member whole, then every member whole in archive order, in the
  64 KiB reads of ``shutil.copyfileobj``), each against plain range GETs of the same bytes
  through the same proxy (one GET per member for the sequential cases), and the time of each
  against those GETs (without the proxy; the median of 5 runs, taken in turns);
- ``tiled_archive.open()`` of a ZIP holding one HDF5 dataset (8 MiB, 64x64 chunks) and one
  8x8 slice of it: bytes moved by the open (cold cache) and by the slice;
- streamed archive: ``GET /api/v1/archive/{node}`` with SHA-256 of the bytes computed as they
  arrive, vs a plain GET (same hashing) of a file of the same size from the static server;
  time to first byte; ``HEAD`` (the exact length), cold (every file hashed first) and warm;
  the download page; the Tiled server's peak RSS before and after (VmHWM).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from tiled_archive.reader import open_archive
from tiled_archive.testing import CountingProxy, free_port, serving, static_files_command
from tiled_archive.writer import convert, create
from tiled_archive.writer.load import load

MIB = 1 << 20
KEY = "benchmarkkey0123"
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


def setup(root: Path, size_mb: int) -> Path:
    sources = root / "sources" / "scan"
    sources.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = size_mb * 10**6 // 16 // 8
    for index in range(16):
        np.save(sources / f"part_{index:02d}.npy", rng.random(per_file))
    create(root / "archive", [root / "sources"], quiet=True)
    (root / "www").mkdir()
    convert(root / "archive", root / "www" / "archive.zip", quiet=True)
    return root / "www" / "archive.zip"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def random_reads(archive_path: Path, count: int, size: int = MIB) -> list[tuple[str, int, int]]:
    """(member, offset in member, absolute offset in the ZIP) of ``count`` reads of ``size``."""
    with open_archive(archive_path) as archive:
        members = [m for m in archive.members() if m.endswith(".npy")]
        spans = {m: archive.span(m) for m in members}
    picker = random.Random(1)
    reads = []
    for _ in range(count):
        member = picker.choice(members)
        offset = picker.randrange(0, spans[member].length - size)
        reads.append((member, offset, spans[member].offset + offset))
    return reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ta-remote-") as work:
        root = Path(work)
        os.environ["TILED_ARCHIVE_CACHE"] = str(root / "cache")
        log.print("setting up")
        local = setup(root, args.size_mb)
        port = free_port()
        command, env = static_files_command(root / "www", port)
        with serving(command, port, env=env, log=root / "static.log"):
            url = f"http://127.0.0.1:{port}/archive.zip"
            rows = measure_remote(local, url, args.reads)
            rows += measure_moved(local, port, args.reads)
            rows += measure_hdf5_slice(root, port)
            rows += measure_streamed(root, port)
    table = Table(title="Remote archives (loopback, one run)", header_style="bold")
    for column in ("case", "value", "× baseline", "note"):
        table.add_column(column)
    for case, value, ratio, note in rows:
        table.add_row(case, value, ratio, note)
    out.print(table)
    out.print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    return 0


def measure_remote(local: Path, url: str, count: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for state in ("cold", "warm"):
        with open_archive(url) as archive:
            archive.catalog_path()
            file = archive.source.file
            rows.append(
                (
                    f"open ({state} cache)",
                    f"{file.requests} requests",
                    "",
                    f"{file.received / 1e6:.2f} MB received",
                )
            )
    reads = random_reads(local, count)
    total = count * MIB / 1e6

    def plain() -> None:
        with httpx.Client() as client:
            for _, _, absolute in reads:
                headers = {"Range": f"bytes={absolute}-{absolute + MIB - 1}"}
                assert len(client.get(url, headers=headers).content) == MIB

    def ours_remote() -> None:
        with open_archive(url) as archive:
            for member, offset, _ in reads:
                assert len(archive.source.read(member, offset, MIB)) == MIB

    def ours_local() -> None:
        with open_archive(local) as archive:
            for member, offset, _ in reads:
                assert len(archive.source.read(member, offset, MIB)) == MIB

    def remotezip_reads() -> None:
        from remotezip import RemoteZip

        with RemoteZip(url) as zipped:
            for member, offset, _ in reads:
                with zipped.open(member) as handle:
                    handle.seek(offset)
                    assert len(handle.read(MIB)) == MIB

    def fsspec_reads() -> None:
        import fsspec

        fs = fsspec.filesystem("zip", fo=url, target_protocol="http")
        for member, offset, _ in reads:
            with fs.open(member) as handle:
                handle.seek(offset)
                assert len(handle.read(MIB)) == MIB

    cases = [
        ("plain httpx range GETs (baseline)", plain),
        ("tiled-archive remote", ours_remote),
        ("tiled-archive local", ours_local),
        ("remotezip", remotezip_reads),
        ("fsspec zip::http", fsspec_reads),
    ]
    seconds = {}
    for name, function in cases:
        log.print(f"reads: {name}")
        function()  # warm: connections, page cache
        seconds[name] = timed(function)
    baseline = total / seconds[cases[0][0]]
    for name, _ in cases:
        rate = total / seconds[name]
        rows.append(
            (
                f"random 1 MiB reads: {name}",
                f"{rate:.0f} MB/s",
                f"{rate / baseline:.2f}",
                f"{count} reads",
            )
        )
    return rows


#: The read of the small random case, and of the large one.
SMALL_READ = 512
LARGE_READ = 4 * MIB
#: What ``shutil.copyfileobj`` reads at a time (the sequential cases).
COPY_READ = 64 << 10
#: Timed runs of each case (in turns with its baseline; the median is shown): a machine
#: that other work shares moves single runs by tens of percent.
REPEATS = 5

#: (member, offset in member, absolute offset in the ZIP, size) of one read.
Read = tuple[str, int, int, int]


def read_cases(local: Path, count: int) -> dict[str, list[Read]]:
    """The reads of each case of :func:`measure_moved`: small and large random reads, and
    every ``.npy`` member whole (read sequentially)."""
    with open_archive(local) as archive:
        spans = {m: archive.span(m) for m in archive.members() if m.endswith(".npy")}
    large = min(LARGE_READ, min(span.length for span in spans.values()) // 2)
    # Archive order: each member's data follows the one before it (and its local header).
    members = sorted(spans.items(), key=lambda item: item[1].offset)
    first, span = members[0]
    return {
        f"small random ({SMALL_READ} B)": [
            (*read, SMALL_READ) for read in random_reads(local, count, SMALL_READ)
        ],
        f"large random ({large / MIB:g} MiB)": [
            (*read, large) for read in random_reads(local, max(4, count // 10), large)
        ],
        f"sequential, one member ({span.length / 1e6:.0f} MB)": [
            (first, 0, span.offset, span.length)
        ],
        f"sequential, {len(members)} members in archive order": [
            (member, 0, span.offset, span.length) for member, span in members
        ],
    }


def read_ours(archive, reads: list[Read]) -> None:
    """The reads from an open archive: random ones by position, whole members by
    ``shutil.copyfileobj`` from the member's file."""
    for member, offset, _, size in reads:
        if offset == 0 and size == archive.members()[member].size:
            with archive.open(member) as stream:
                shutil.copyfileobj(stream, Discard(), COPY_READ)
        else:
            assert len(archive.source.read(member, offset, size)) == size


class Discard(io.RawIOBase):
    """Where copied bytes go: nowhere."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return len(data)


def read_plain(url: str, reads: list[Read]) -> None:
    """The same bytes by plain ``httpx`` range GETs: one per read, streamed."""
    with httpx.Client() as client:
        for _, _, absolute, size in reads:
            headers = {"Range": f"bytes={absolute}-{absolute + size - 1}"}
            with client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 206
                got = sum(len(chunk) for chunk in response.iter_raw())
            assert got == size


def time_reads(url: str, reads: list[Read], repeats: int = REPEATS) -> tuple[float, float]:
    """Seconds of the reads by plain range GETs, and by a newly opened archive (its open not
    counted, its cache empty): the median of ``repeats``, taken in turns."""
    plain, ours = [], []
    for _ in range(repeats):
        plain.append(timed(lambda: read_plain(url, reads)))
        with open_archive(url) as archive:
            ours.append(timed(lambda archive=archive: read_ours(archive, reads)))
    return statistics.median(plain), statistics.median(ours)


def measure_moved(local: Path, port: int, count: int) -> list[tuple[str, str, str, str]]:
    rows = []
    direct = f"http://127.0.0.1:{port}/archive.zip"
    for case, reads in read_cases(local, count).items():
        log.print(f"moved: {case}")
        read = sum(size for *_, size in reads)
        with CountingProxy(port) as proxy:
            with open_archive(f"{proxy.url}/archive.zip") as archive:
                before = proxy.received
                read_ours(archive, reads)
            moved = proxy.received - before  # closed: what it read ahead has arrived
            before = proxy.received
            read_plain(f"{proxy.url}/archive.zip", reads)
            plain_moved = proxy.received - before
        rows.append(
            (
                f"{case}: bytes moved / bytes read",
                f"{moved / read:.2f}",
                f"{moved / plain_moved:.2f}",
                f"{moved / len(reads) / 1e3:.1f} kB moved per read "
                f"(plain range GETs {plain_moved / len(reads) / 1e3:.1f} kB); {len(reads)} reads",
            )
        )
        time_reads(direct, reads, repeats=1)  # warm: connections, page cache
        plain_seconds, ours_seconds = time_reads(direct, reads)
        rate, plain_rate = read / 1e6 / ours_seconds, read / 1e6 / plain_seconds
        rows.append(
            (
                f"{case}: throughput",
                f"{rate:.1f} MB/s",
                f"{rate / plain_rate:.2f}",
                f"plain range GETs {plain_rate:.1f} MB/s; median of {REPEATS}, open not counted",
            )
        )
    return rows


def measure_hdf5_slice(root: Path, port: int) -> list[tuple[str, str, str, str]]:
    """``open()`` of a ZIP holding one HDF5 dataset, then one 8x8 slice: bytes moved."""
    import h5py

    import tiled_archive

    source = root / "hdf5" / "detector.h5"
    source.parent.mkdir()
    with h5py.File(source, "w") as h5:
        data = np.random.default_rng(2).random((1024, 1024))
        h5.create_dataset("frames", data=data, chunks=(64, 64))
    create(root / "hdf5-archive", [source], quiet=True)
    convert(root / "hdf5-archive", root / "www" / "hdf5.zip", quiet=True)
    size = (root / "www" / "hdf5.zip").stat().st_size
    log.print("moved: open() + 8x8 slice of an HDF5 dataset")
    with CountingProxy(port) as proxy:
        with tiled_archive.open(f"{proxy.url}/hdf5.zip") as client:
            opened = proxy.received
            block = client["detector"]["frames"][:8, :8]
            sliced = proxy.received - opened
        assert block.shape == (8, 8)
    return [
        (
            "open() + 8x8 slice of an HDF5 dataset: the slice",
            f"{sliced / 1e3:.1f} kB moved",
            "",
            f"the open (cold cache) {opened / 1e6:.2f} MB; archive {size / 1e6:.1f} MB",
        )
    ]


def measure_streamed(root: Path, static_port: int) -> list[tuple[str, str, str, str]]:
    catalog = root / "catalog.db"
    load(root / "archive", f"sqlite:///{catalog}", root / "registered", at="bench")
    config = root / "config.yml"
    config.write_text(
        f"authentication:\n  single_user_api_key: {KEY}\n"
        f"trees:\n  - path: /\n    tree: catalog\n    args:\n      uri: sqlite:///{catalog}\n"
        f"      readable_storage: [{root / 'registered'}]\n"
        "routers:\n  - tiled_archive.serve.router:router\n"
    )
    port = free_port()
    tiled = Path(sys.executable).parent / "tiled"
    rows = []
    with serving([tiled, "serve", "config", config, "--port", port], port) as server:
        archive_url = f"{server.url}/api/v1/archive/bench?api_key={KEY}"
        rss_before = peak_rss_mb(server.process.pid)

        def fetch(url: str, into: Path | None = None) -> tuple[float, float, int]:
            digest, size = hashlib.sha256(), 0
            start = time.perf_counter()
            first = None
            with (
                open(into or os.devnull, "wb") as sink,
                httpx.stream("GET", url, timeout=600) as response,
            ):
                response.raise_for_status()
                for chunk in response.iter_bytes(MIB):
                    if first is None:
                        first = time.perf_counter() - start
                    digest.update(chunk)
                    size += len(chunk)
                    if into:
                        sink.write(chunk)
            return time.perf_counter() - start, first or 0.0, size

        def timed_request(method: str, **headers: str) -> tuple[float, httpx.Response]:
            start = time.perf_counter()
            response = httpx.request(method, archive_url, headers=headers, timeout=600)
            response.raise_for_status()
            return time.perf_counter() - start, response

        log.print("streamed archive")
        # Cold: the server hashes every file before it knows the archive (then keeps the
        # digests): the first HEAD pays it.
        head_cold, head = timed_request("HEAD")
        head_warm, _ = timed_request("HEAD")
        page_seconds, _ = timed_request("GET", Accept="text/html")
        fetch(archive_url, root / "www" / "streamed.zip")  # also the plain GET's file
        streamed_seconds, first_byte, size = fetch(archive_url)
        rss_after = peak_rss_mb(server.process.pid)
        plain_url = f"http://127.0.0.1:{static_port}/streamed.zip"
        fetch(plain_url)
        plain_seconds, plain_first, _ = fetch(plain_url)
    plain_rate = size / 1e6 / plain_seconds
    rate = size / 1e6 / streamed_seconds
    rows.append(
        ("plain GET of the same bytes + SHA-256", f"{plain_rate:.0f} MB/s", "1.00", "baseline")
    )
    rows.append(
        (
            "streamed archive + SHA-256 (router)",
            f"{rate:.0f} MB/s",
            f"{rate / plain_rate:.2f}",
            f"{size / 1e6:.0f} MB",
        )
    )
    rows.append(
        ("streamed archive: first byte", f"{first_byte:.3f} s", "", f"plain: {plain_first:.3f} s")
    )
    assert int(head.headers["content-length"]) == size
    rows.append(
        (
            "streamed archive: HEAD (exact Content-Length)",
            f"{head_warm:.3f} s",
            "",
            f"cold (hashing every file first): {head_cold:.3f} s",
        )
    )
    rows.append(("streamed archive: the download page", f"{page_seconds:.3f} s", "", "warm"))
    rows.append(
        (
            "Tiled server peak RSS",
            f"{rss_after:.0f} MB",
            "",
            f"{rss_before:.0f} MB before the archive",
        )
    )
    return rows


if __name__ == "__main__":
    sys.exit(main())
