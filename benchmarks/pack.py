"""Pack throughput, random slice reads and pack memory, against baselines of the same run.

    .venv/bin/python benchmarks/pack.py [--size-mb 1070] [--runs 3] [--reads 200] [--fresh]

Not a test: nothing is asserted about timings. Every figure is printed next to its ratio to a
baseline measured in the same run, on the same machine, with the same bytes:

1. Setup, cached under ``benchmarks/output/`` (git-ignored) and reused when present: a source
   folder of 16 ``.npy`` files of random float64 (``np.save``) totalling ``--size-mb`` MB, and
   the directory archive ``bench-dir/`` that ``create()`` makes of it (timed: "create (dir)").
2. Pack: ``convert(bench-dir, out.zip)`` against Info-ZIP ``zip -0 -r -q out2.zip data`` run
   inside ``bench-dir/`` (the same tree of payload bytes) and ``cp -r`` of the directory. Median
   of ``--runs``, page cache warm, outputs removed (and the disk synced) between runs.
   ``convert`` fsyncs its ZIP before returning; ``zip`` and ``cp`` do not, so each baseline is
   also shown with an fsync of its output added to its time.
3. Random reads: ``--reads`` reads of 1 MiB at random offsets (fixed seed) in the largest
   member, from the directory archive's file (baseline), through ``open_archive(zip).open()``,
   by ``os.pread`` at the member's span in the ZIP, and through ``zipfile.ZipFile.open()``.
4. Peak RSS of a pack run in a fresh subprocess (``wait4``), next to ``zip`` and ``cp``.

MB are 10**6 bytes; MiB are 2**20.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from rich.console import Console
from rich.table import Table

from tiled_archive.reader import open_archive
from tiled_archive.writer import convert, create

MB = 1_000_000
FILES = 16
READ_SIZE = 1 << 20
SEED = 20240601
NPY_HEADER = 128  # np.save's header of a 1-D float64 array, padded to 64 bytes
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output"

out = Console(width=max(132, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")

# Run in a fresh interpreter, which reports its own peak RSS after the imports and after one
# pack. VmHWM (the high-water RSS of the process's current address space) rather than ru_maxrss:
# on Linux a child's ru_maxrss starts from its parent's peak RSS at fork, here hundreds of MB.
PACK_CHILD = """
import json, resource, sys, time
import tiled_archive.catalog.db_file, tiled_archive.reader
from tiled_archive.writer import convert

def peak_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kib()
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"before_kib": before, "after_kib": peak_kib(), "seconds": seconds}))
"""


# -- Setup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    work: Path
    source: Path
    bench_dir: Path
    create_seconds: float
    cached: bool


def setup(work: Path, size_mb: int, fresh: bool) -> Setup:
    """The source folder and its directory archive, built once per size and then reused."""
    state = work / "setup.json"
    source = work / "source" / "bench"
    bench_dir = work / "bench-dir"
    if not fresh and state.is_file() and bench_dir.is_dir():
        info = json.loads(state.read_text())
        if info.get("size_mb") == size_mb and info.get("files") == FILES:
            log.print(f"setup: reusing {bench_dir} (created in {info['create_seconds']:.1f} s)")
            return Setup(work, source, bench_dir, info["create_seconds"], cached=True)
    shutil.rmtree(work, ignore_errors=True)
    source.mkdir(parents=True)
    log.print(f"setup: writing {FILES} .npy files, {size_mb} MB in all, to {source}")
    write_arrays(source, size_mb * MB)
    warm(source)
    log.print(f"setup: create() into {bench_dir}")
    start = time.perf_counter()
    create(bench_dir, [source], quiet=True)
    seconds = time.perf_counter() - start
    state.write_text(json.dumps({"size_mb": size_mb, "files": FILES, "create_seconds": seconds}))
    return Setup(work, source, bench_dir, seconds, cached=False)


def write_arrays(folder: Path, total_bytes: int) -> None:
    rng = np.random.default_rng(SEED)
    count = max(1, (total_bytes // FILES - NPY_HEADER) // 8)
    for index in range(FILES):
        np.save(folder / f"array-{index:02d}.npy", rng.random(count))


def files_under(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for folder, _, names in os.walk(path):
        for name in sorted(names):
            yield Path(folder, name)


def warm(path: Path) -> None:
    """Read every file under ``path`` once, so later reads come from the page cache."""
    for file in files_under(path):
        with open(file, "rb", buffering=0) as handle:
            while handle.read(8 * READ_SIZE):
                pass


def fsync_tree(path: Path) -> None:
    for file in files_under(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- Pack -------------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    seconds: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure_pack(bench: Setup, runs: int) -> tuple[list[Timing], Path]:
    """Time convert, zip -0 -r and cp -r; the last convert's ZIP is kept for the reads."""
    out_zip = bench.work / "out.zip"
    out_zip2 = bench.work / "out2.zip"
    copy = bench.work / "cp-copy"
    for path in (out_zip, out_zip2, copy):
        remove(path)
    warm(bench.bench_dir)
    ours = Timing("convert(bench-dir, out.zip)", [], "ours; fsyncs the ZIP")
    zip_plain = Timing("zip -0 -r -q out2.zip data", [], "baseline; no fsync")
    zip_synced = Timing("zip -0 -r, then fsync", [], "zip time + fsync of out2.zip")
    cp_plain = Timing("cp -r bench-dir", [], "no fsync")
    cp_synced = Timing("cp -r, then fsync", [], "cp time + fsync of each file")

    def fresh_start(path: Path) -> None:
        remove(path)
        os.sync()  # no writeback of an earlier run's output during this one

    for run in range(1, runs + 1):
        log.print(f"pack: run {run}/{runs}")
        fresh_start(out_zip)
        start = time.perf_counter()
        convert(bench.bench_dir, out_zip)
        ours.seconds.append(time.perf_counter() - start)

        fresh_start(out_zip2)
        start = time.perf_counter()
        subprocess.run(
            ["zip", "-0", "-r", "-q", str(out_zip2), "data"], cwd=bench.bench_dir, check=True
        )
        zip_plain.seconds.append(time.perf_counter() - start)
        fsync_tree(out_zip2)
        zip_synced.seconds.append(time.perf_counter() - start)
        remove(out_zip2)

        fresh_start(copy)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(bench.bench_dir), str(copy)], check=True)
        cp_plain.seconds.append(time.perf_counter() - start)
        fsync_tree(copy)
        cp_synced.seconds.append(time.perf_counter() - start)
        remove(copy)
    os.sync()

    created = Timing(
        "create(bench-dir, \\[source])",
        [bench.create_seconds],
        "setup, 1 run" + (" (cached from an earlier run)" if bench.cached else ""),
    )
    return [ours, zip_plain, zip_synced, cp_plain, cp_synced, created], out_zip


def pack_table(timings: list[Timing], payload_bytes: int) -> Table:
    baseline = timings[1].median
    table = Table(title=f"Pack throughput ({payload_bytes / MB:,.0f} MB payload, warm cache)")
    table.add_column("operation")
    table.add_column("median s", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("time ÷ zip -0 -r", justify="right")
    table.add_column("runs (s)", justify="right")
    table.add_column("note")
    for timing in timings:
        table.add_row(
            timing.name,
            f"{timing.median:.2f}",
            f"{payload_bytes / MB / timing.median:,.0f}",
            f"{timing.median / baseline:.2f}",
            " ".join(f"{s:.2f}" for s in timing.seconds),
            timing.note,
        )
    return table


# -- Random reads ----------------------------------------------------------------------------


@dataclass
class Reads:
    name: str
    seconds: list[float]
    crc32: int

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def seek_read(handle: BinaryIO, size: int) -> Callable[[int], bytes]:
    def read_at(offset: int) -> bytes:
        handle.seek(offset)
        return handle.read(size)

    return read_at


def timed_reads(name: str, read_at: Callable[[int], bytes], offsets: list[int], size: int) -> Reads:
    seconds, crc = [], 0
    for offset in offsets:
        start = time.perf_counter()
        data = read_at(offset)
        seconds.append(time.perf_counter() - start)
        if len(data) != size:
            raise RuntimeError(f"{name}: read {len(data)} bytes at {offset}, expected {size}")
        crc = zlib.crc32(data, crc)
    return Reads(name, seconds, crc)


def measure_reads(bench: Setup, zip_path: Path, count: int) -> tuple[list[Reads], str, int]:
    with open_archive(zip_path) as archive:
        largest = max(archive.manifest.files, key=lambda entry: (entry.size, entry.path))
        member, size = largest.path, min(READ_SIZE, largest.size)
        rng = random.Random(SEED)
        offsets = [rng.randrange(largest.size - size + 1) for _ in range(count)]
        warm(zip_path)
        log.print(f"reads: {count} reads of {size} bytes in {member}")
        results = []
        with open(bench.bench_dir / member, "rb") as handle:
            results.append(
                timed_reads(
                    "(a) directory archive file: open + seek + read",
                    seek_read(handle, size),
                    offsets,
                    size,
                )
            )
        with archive.open(member) as handle:
            results.append(
                timed_reads(
                    "(b) open_archive(zip).open(member): seek + read",
                    seek_read(handle, size),
                    offsets,
                    size,
                )
            )
        span = archive.span(member)
        assert span is not None, "the member is STORED, so it has a span"
        fd = os.open(span.file, os.O_RDONLY)
        try:
            results.append(
                timed_reads(
                    "(c) os.pread at span offset in the ZIP",
                    lambda offset: os.pread(fd, size, span.offset + offset),
                    offsets,
                    size,
                )
            )
        finally:
            os.close(fd)
        with zipfile.ZipFile(zip_path) as zf, zf.open(member) as handle:
            results.append(
                timed_reads(
                    "(d) zipfile.ZipFile.open(member): seek + read",
                    seek_read(handle, size),
                    offsets,
                    size,
                )
            )
    return results, member, size


def reads_table(results: list[Reads], member: str, size: int) -> Table:
    baseline = statistics.median(results[0].seconds)
    table = Table(
        title=f"Random reads: {len(results[0].seconds)} × {size:,} bytes in {member} (warm cache)"
    )
    table.add_column("method")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    table.add_column("max ms", justify="right")
    table.add_column("time ÷ (a)", justify="right")
    table.add_column("bytes = (a)")
    for reads in results:
        median = statistics.median(reads.seconds)
        table.add_row(
            reads.name,
            f"{1000 * median:.3f}",
            f"{reads.quantile_ms(0.9):.3f}",
            f"{1000 * max(reads.seconds):.3f}",
            f"{median / baseline:.2f}",
            "yes" if reads.crc32 == results[0].crc32 else "NO",
        )
    return table


# -- Memory -----------------------------------------------------------------------------------


def run_sampled(argv: list[str], cwd: Path | None = None) -> int | None:
    """Run ``argv`` to its end; its peak RSS in KiB, as last sampled from /proc (None: no /proc).

    The process's own VmHWM is polled every millisecond: a lower bound of its peak, missing at
    most the last millisecond of its life. (``wait4``'s ru_maxrss would include this script's
    own RSS, which the child inherits at fork.)
    """
    proc = subprocess.Popen(argv, cwd=cwd)
    status = Path(f"/proc/{proc.pid}/status")
    peak = None
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak or 0, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.001)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return peak


def memory_table(bench: Setup, payload_bytes: int) -> Table:
    out_zip = bench.work / "rss.zip"
    out_zip2 = bench.work / "rss2.zip"
    copy = bench.work / "rss-copy"
    for path in (out_zip, out_zip2, copy):
        remove(path)
    log.print("memory: one pack in a fresh interpreter, then zip and cp")
    stdout = subprocess.run(
        [sys.executable, "-c", PACK_CHILD, str(bench.bench_dir), str(out_zip)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    child = json.loads(stdout.splitlines()[-1])
    remove(out_zip)
    zip_peak = run_sampled(["zip", "-0", "-r", "-q", str(out_zip2), "data"], bench.bench_dir)
    remove(out_zip2)
    cp_peak = run_sampled(["cp", "-r", str(bench.bench_dir), str(copy)])
    remove(copy)

    def mb(kib: int | None) -> str:
        return "?" if kib is None else f"{kib * 1024 / MB:.1f}"

    table = Table(title=f"Peak RSS while packing {payload_bytes / MB:,.0f} MB (VmHWM)")
    table.add_column("process")
    table.add_column("peak RSS MB", justify="right")
    table.add_column("before pack MB", justify="right")
    table.add_column("growth during pack MB", justify="right")
    table.add_column("growth ÷ payload", justify="right")
    growth = (child["after_kib"] - child["before_kib"]) * 1024
    table.add_row(
        f"python: convert() ({child['seconds']:.1f} s)",
        mb(child["after_kib"]),
        mb(child["before_kib"]),
        f"{growth / MB:.1f}",
        f"{growth / payload_bytes:.4f}",
    )
    table.add_row("zip -0 -r (sampled)", mb(zip_peak), "", "", "")
    table.add_row("cp -r (sampled)", mb(cp_peak), "", "", "")
    return table


# -- Main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1070, help="payload size (default 1070)")
    parser.add_argument("--runs", type=int, default=3, help="pack runs per tool (default 3)")
    parser.add_argument("--reads", type=int, default=200, help="random reads (default 200)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="cache folder")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.size_mb < 1 or args.runs < 1 or args.reads < 1:
        parser.error("--size-mb, --runs and --reads must be positive")
    if shutil.which("zip") is None:
        parser.error("Info-ZIP `zip` is not on PATH")

    bench = setup(args.output / f"size-{args.size_mb}mb", args.size_mb, args.fresh)
    with open_archive(bench.bench_dir) as archive:
        payload_bytes = sum(entry.size for entry in archive.manifest.files)
        file_count = len(archive.manifest.files)
    zip_version = subprocess.run(["zip", "-v"], capture_output=True, text=True).stdout
    out.print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{zip_version.splitlines()[1].strip().rstrip('.')}; "
        f"{file_count} payload files, {payload_bytes:,} bytes; runs={args.runs}"
    )

    timings, zip_path = measure_pack(bench, args.runs)
    out.print(pack_table(timings, payload_bytes))
    results, member, size = measure_reads(bench, zip_path, args.reads)
    out.print(reads_table(results, member, size))
    remove(zip_path)
    out.print(memory_table(bench, payload_bytes))


if __name__ == "__main__":
    main()
