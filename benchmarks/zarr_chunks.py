"""One chunk read through ``from_catalog()`` from a Zarr store of 100 chunks and of 100,000.

    .venv/bin/python benchmarks/zarr_chunks.py [--chunks 100000] [--reads 200] [--fresh]

Not a test: nothing is asserted about timings. Setup (cached under ``benchmarks/output/``): two
Zarr v3 arrays of 4 x 4 int32 chunks (nested chunk folders ``c/I/J``), 10 x 10 chunks and about
``--chunks``, each archived by ``create()`` into a directory archive and relocated, so that a
stock catalog names its files. Timed, in one process with the page cache warm: ``--reads``
single-element reads at random positions through Tiled's client over
``tiled_archive.from_catalog(catalog.db, readable_storage=[data])``, each a request that builds
the adapter and so checks the store (its folders stat-ed, the store walked again only when one
changed). Reported: median and p90 per read, and the ratio to the 100-chunk store (the goal:
within 1.5x).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import tiled_archive
from tiled_archive.writer import create, relocate

HERE = Path(__file__).resolve().parent
CHUNK = 4
out = Console()
log = Console(stderr=True, style="dim")


def setup(folder: Path, chunks: int, fresh: bool) -> Path:
    """A relocated directory archive holding one Zarr array of about ``chunks`` chunks."""
    import zarr

    side = CHUNK * max(1, round(math.sqrt(chunks)))
    archive = folder / f"zarr-{chunks}"
    if (archive / "catalog.db").exists() and not fresh:
        return archive
    shutil.rmtree(archive, ignore_errors=True)
    source = folder / f"zarr-{chunks}-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    log.print(f"writing a {side} x {side} array in {(side // CHUNK) ** 2:,} chunks")
    array = zarr.create_array(
        source / "grid.zarr", shape=(side, side), chunks=(CHUNK, CHUNK), dtype="i4"
    )
    array[:] = np.arange(side * side, dtype="i4").reshape(side, side)
    create(archive, [source])
    relocate(archive)
    shutil.rmtree(source)
    return archive


def timed_reads(archive: Path, reads: int) -> list[float]:
    seconds = []
    with tiled_archive.from_catalog(
        archive / "catalog.db", readable_storage=[archive / "data"]
    ) as client:
        (container,) = client.values()
        node = container["grid"]
        side = node.shape[0]
        rng = random.Random(0)
        node[0, 0]  # the first read pays the first walk
        for _ in range(reads):
            row, column = rng.randrange(side), rng.randrange(side)
            start = time.perf_counter()
            value = int(node[row, column])
            seconds.append(time.perf_counter() - start)
            assert value == row * side + column
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup")
    parser.add_argument("--output", type=Path, default=HERE / "output")
    args = parser.parse_args(argv)
    sizes = [100, args.chunks]
    archives = {size: setup(args.output, size, args.fresh) for size in sizes}
    results = {size: timed_reads(archives[size], args.reads) for size in sizes}
    anchor = statistics.median(results[100])
    table = Table(title=f"One element read through from_catalog(), {args.reads} reads")
    for column in ("store", "median ms", "p90 ms", "x 100 chunks"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for size in sizes:
        median = statistics.median(results[size])
        p90 = statistics.quantiles(results[size], n=10)[-1]
        table.add_row(
            f"{size:,} chunks", f"{median * 1e3:.1f}", f"{p90 * 1e3:.1f}", f"{median / anchor:.2f}"
        )
    out.print(table)


if __name__ == "__main__":
    main()
