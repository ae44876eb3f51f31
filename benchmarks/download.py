"""Download throughput and memory, against plain httpx GETs of the same bytes in the same run.

    .venv/bin/python benchmarks/download.py [--big-mb 2048] [--many 16] [--many-mb 1024]
                                            [--chunks 512] [--runs 3] [--workers 4] [--fresh]

Not a test: nothing is asserted about timings. Every figure is printed next to its ratio to a
baseline measured in the same run, on the same machine, from the same server:

1. Setup, cached under ``benchmarks/output/download/`` (git-ignored) and reused: one ``.npy``
   file of ``--big-mb`` MiB (the "2 GB asset"), ``--many`` files totalling ``--many-mb`` MiB and
   a Zarr store of ``--chunks`` files of 256 KiB (many small files: per-file costs), registered
   in a Tiled catalog by Tiled's own registration. Stock ``tiled serve catalog`` serves
   it in a subprocess on loopback (``--public``, raw assets on, as by default).
2. Throughput, median of ``--runs``, each run cold (a fresh download cache, outputs removed and
   the disk synced before every timed step): ``tiled_archive.download`` into a directory archive
   and into a ZIP (which it fsyncs), end to end, against the baseline: the same ``/asset/bytes``
   URLs (listed beforehand, untimed) fetched with plain ``httpx`` streaming GETs (identity
   encoding, 1 MiB chunks) into files, with as many threads as download's ``workers``, no
   fsync. "fetch" is download's own fetching phase (walking the tree, listing, fetching into
   the cache); the rest is building the catalog and writing the archive. A last row downloads
   again from a warm cache.
3. Peak RSS (VmHWM from /proc) of a fresh interpreter downloading the big asset into a ZIP,
   read by the child itself after importing what a download imports, and after the download.

MiB are 2**20 bytes; MB/s are 10**6 bytes per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from pack import Timing
from rich.console import Console
from rich.table import Table

import tiled_archive
from tiled_archive.catalog.registration import build_catalog
from tiled_archive.testing import free_port, serving, tiled_serve_catalog

MIB = 1 << 20
#: Size of one chunk file of the Zarr store (the "chunks" case: many small files).
CHUNK_KIB = 256
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output" / "download"
out = Console(width=max(132, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")

RSS_CHILD = """
import json, sys, time
from tiled.client import from_uri
import tiled_archive
import tiled_archive.downloader  # what a download imports (Tiled's catalog, SQLAlchemy, dask)

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

node = from_uri(sys.argv[1])["big"]
before = peak_kib()
start = time.perf_counter()
tiled_archive.download(node, sys.argv[2], cache_dir=sys.argv[3])
print(json.dumps({"before_kib": before, "after_kib": peak_kib(),
                  "seconds": time.perf_counter() - start}))
"""


# -- Setup and server ---------------------------------------------------------------------------


def setup(work: Path, big_mb: int, many: int, many_mb: int, chunks: int, fresh: bool) -> Path:
    """The source files and their catalog, built once per size and then reused."""
    state = {"big_mb": big_mb, "many": many, "many_mb": many_mb, "chunks": chunks}
    marker = work / "setup.json"
    if not fresh and marker.is_file() and json.loads(marker.read_text()) == state:
        log.print(f"setup: reusing {work}")
        return work / "catalog.db"
    shutil.rmtree(work, ignore_errors=True)
    log.print(
        f"setup: {big_mb} MiB + {many} × {many_mb // many} MiB of .npy, a Zarr store of {chunks}"
        f" × {CHUNK_KIB} KiB chunks, under {work}"
    )
    source = work / "source"
    write_npy(source / "big" / "big.npy", big_mb * MIB)
    for index in range(many):
        write_npy(source / "many" / f"part_{index:02d}.npy", many_mb * MIB // many)
    write_zarr(source / "chunks.zarr", chunks)
    sources = {"big": source / "big", "many": source / "many", "chunks": source / "chunks.zarr"}
    build_catalog(work / "catalog.db", sources)
    marker.write_text(json.dumps(state))
    return work / "catalog.db"


def write_zarr(path: Path, chunks: int) -> None:
    """A Zarr v3 array of ``chunks`` uncompressed chunk files of :data:`CHUNK_KIB` KiB each."""
    import zarr

    side = CHUNK_KIB * 1024 // 8
    array = zarr.create_array(
        str(path), shape=(chunks, side), chunks=(1, side), dtype="f8", compressors=None
    )
    array[:] = np.random.default_rng(0).random((chunks, side))


def write_npy(path: Path, size: int) -> None:
    """A float64 .npy of about ``size`` bytes: one random MiB repeated (quick to write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).random(MIB // 8)
    rows = size // MIB
    array = np.lib.format.open_memmap(path, mode="w+", dtype="f8", shape=(rows, MIB // 8))
    for row in range(rows):
        array[row] = block
    array.flush()


@contextlib.contextmanager
def tiled_serve(catalog: Path) -> Iterator[str]:
    """Stock ``tiled serve catalog`` in a subprocess on a free loopback port: its API URL."""
    port = free_port()
    with serving(tiled_serve_catalog(catalog, catalog.parent, port, "--public"), port) as server:
        yield f"{server.url}/api/v1"


# -- Throughput ---------------------------------------------------------------------------------


def asset_urls(client: httpx.Client, node) -> list[tuple[str, dict]]:
    """The raw-asset URL and query of every file below ``node``, files inside directory assets
    (Zarr) included, listed through ``/asset/manifest``."""
    node = node.include_data_sources()
    urls = []
    for child in node.values() if node.structure_family == "container" else [node]:
        link = child.item["links"]["self"]
        bytes_link = link.replace("/metadata", "/asset/bytes", 1)
        for source in child.item["attributes"]["data_sources"]:
            for asset in source["assets"]:
                query = {"id": asset["id"]}
                if not asset["is_directory"]:
                    urls.append((bytes_link, query))
                    continue
                listing = client.get(link.replace("/metadata", "/asset/manifest", 1), params=query)
                root = asset["data_uri"].split("://", 1)[1]
                root = root[root.index("/") :]
                for path in listing.raise_for_status().json()["manifest"]:
                    relative = str(Path(path).relative_to(root))
                    urls.append((bytes_link, {**query, "relative_path": relative}))
    return urls


def plain_get(client: httpx.Client, url: str, params: dict, target: Path) -> int:
    headers = {"Accept-Encoding": "identity"}
    with client.stream("GET", url, params=params, headers=headers) as response:
        response.raise_for_status()
        with open(target, "wb") as sink:
            for chunk in response.iter_raw(MIB):
                sink.write(chunk)
    return target.stat().st_size


def fresh(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    os.sync()  # no writeback of an earlier step's output during the next one


def timed(timing: Timing, step: Callable[[], object]) -> None:
    start = time.perf_counter()
    step()
    timing.seconds.append(time.perf_counter() - start)


def measure(url: str, name: str, runs: int, workers: int, work: Path) -> list[Timing]:
    from tiled.client import from_uri

    node = from_uri(url)[name]
    with httpx.Client() as client:
        urls = asset_urls(client, node)
    threads = min(workers, len(urls))
    plain = Timing("plain httpx GETs into files", [], f"baseline; {threads} thread(s)")
    fetch = Timing("download → ZIP: fetch phase", [], "until the last file is in the cache")
    to_dir = Timing("download → directory", [], "end to end; hard-links from the cache")
    to_zip = Timing("download → ZIP", [], "end to end; fsyncs the ZIP")
    warm = Timing("download → ZIP, warm cache", [], "nothing fetched; every blob re-hashed")
    cache, folder = work / "cache", work / "plain"
    last_file: list[float] = []

    def to_zip_step() -> None:
        tiled_archive.download(
            node,
            work / "dest.zip",
            cache_dir=cache,
            workers=workers,
            on_file=lambda path, size: last_file.append(time.perf_counter()),
        )

    jobs = [(url, params, folder / f"{i}.bin") for i, (url, params) in enumerate(urls)]
    for run in range(1, runs + 1):
        log.print(f"{name}: run {run}/{runs}")
        fresh(folder)
        folder.mkdir()
        with httpx.Client() as client, ThreadPoolExecutor(workers) as pool:
            timed(plain, lambda: list(pool.map(lambda job: plain_get(client, *job), jobs)))
        fresh(folder, cache, work / "dest")
        timed(
            to_dir,
            lambda: tiled_archive.download(node, work / "dest", cache_dir=cache, workers=workers),
        )
        fresh(cache, work / "dest", work / "dest.zip")
        start = time.perf_counter()
        timed(to_zip, to_zip_step)
        fetch.seconds.append(last_file[-1] - start)
        fresh(work / "dest.zip")
        timed(warm, to_zip_step)
        fresh(cache, work / "dest.zip")
    return [plain, fetch, to_dir, to_zip, warm]


def throughput_table(name: str, payload: int, timings: list[Timing]) -> Table:
    baseline = timings[0].median
    table = Table(title=f"{name}: {payload / MIB:,.0f} MiB over loopback (cold cache)")
    for column in ("operation", "median s", "MB/s", "throughput ÷ baseline", "runs (s)"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    table.add_column("note")
    for timing in timings:
        median, runs = timing.median, " ".join(f"{s:.2f}" for s in timing.seconds)
        speed, ratio = f"{payload / 1e6 / median:,.0f}", f"{baseline / median:.2f}"
        table.add_row(timing.name, f"{median:.2f}", speed, ratio, runs, timing.note)
    return table


# -- Memory -------------------------------------------------------------------------------------


def memory_table(url: str, work: Path, big: int) -> Table:
    fresh(work / "rss.zip", work / "rss-cache")
    log.print("memory: the big asset into a ZIP, in a fresh interpreter")
    command = [sys.executable, "-c", RSS_CHILD, url, str(work / "rss.zip")]
    done = subprocess.run(
        [*command, str(work / "rss-cache")], stdout=subprocess.PIPE, text=True, check=True
    )
    child = json.loads(done.stdout.splitlines()[-1])
    fresh(work / "rss.zip", work / "rss-cache")
    table = Table(title=f"Peak RSS downloading {big / MIB:,.0f} MiB into a ZIP")
    for column in ("peak RSS (VmHWM)", "MiB", "÷ asset size"):
        table.add_column(column, justify="left" if column.startswith("peak") else "right")
    before, after = child["before_kib"] / 1024, child["after_kib"] / 1024
    table.add_row("after imports and connecting", f"{before:,.0f}", f"{before * MIB / big:.3f}")
    table.add_row(
        f"after the download ({child['seconds']:.1f} s)",
        f"{after:,.0f}",
        f"{after * MIB / big:.3f}",
    )
    table.add_row("growth during the download", f"{after - before:,.0f}", "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mb", type=int, default=2048)
    parser.add_argument("--many", type=int, default=16)
    parser.add_argument("--many-mb", type=int, default=1024)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fresh", action="store_true", help="rebuild the sources and catalog")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    catalog = setup(args.output, args.big_mb, args.many, args.many_mb, args.chunks, args.fresh)
    tables = []
    with tiled_serve(catalog) as url:
        cases = [("many", args.many_mb * MIB), ("big", args.big_mb * MIB)]
        cases.append(("chunks", args.chunks * CHUNK_KIB * 1024))
        for name, size in cases:
            timings = measure(url, name, args.runs, args.workers, args.output)
            tables.append(throughput_table(name, size, timings))
        tables.append(memory_table(url, args.output, args.big_mb * MIB))
    for table in tables:
        out.print(table)


if __name__ == "__main__":
    main()
