"""Lazy archives: what a lazy download costs, and what reads move, against baselines measured in
the same run from the same stock ``tiled serve catalog`` (a subprocess on loopback).

    .venv/bin/python benchmarks/lazy.py [--nodes 10000] [--frames 1024] [--runs 3] [--fresh]

Not a test: nothing is asserted. Setup (cached under ``benchmarks/output/lazy/``, git-ignored):
``--nodes`` tiny ``.npy`` files in folders of 100, and an HDF5 file of ``--frames`` frames of
1 MiB (chunked by frame, as detectors write them: 1 GiB by default), registered by Tiled's
own registration. Rows:

1. Lazy download of the ``--nodes``-node tree, in-process (median of ``--runs``), and as the
   whole command (``tiled-archive download --lazy``, start-up included), against the
   baseline: its metadata listing (every container's children, with their data sources,
   page by page) fetched with plain httpx.
2. Bytes on the wire (a counting proxy) of the first read of one frame of the HDF5 file from a
   lazy archive of it, against the frame's size; the same read again.
3. Bytes on the wire of reading a quarter of the frames through a lazy archive, then
   ``fetch`` of the rest (the blocks read are kept), against the payload; then an eager
   ``download`` of the same node (the fetched file reused from the cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import tiled_archive
from tiled_archive.catalog.registration import build_catalog
from tiled_archive.testing import (
    CountingProxy,
    free_port,
    list_every_container,
    serving,
    tiled_serve_catalog,
)
from tiled_archive.writer.lazy import fetch

MIB = 1 << 20
OUTPUT = Path(__file__).resolve().parent / "output" / "lazy"
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


def setup(work: Path, nodes: int, frames: int, fresh: bool) -> Path:
    state = {"nodes": nodes, "frames": frames}
    marker = work / "setup.json"
    if not fresh and marker.is_file() and json.loads(marker.read_text()) == state:
        log.print(f"setup: reusing {work}")
        return work / "catalog.db"
    import h5py

    shutil.rmtree(work, ignore_errors=True)
    log.print(f"setup: {nodes} .npy files and a {frames} MiB HDF5 file under {work}")
    tree = work / "source" / "tree"
    for index in range(nodes):
        folder = tree / f"group_{index // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"item_{index % 100:02d}.npy", np.arange(8) + index)
    big = work / "source" / "frames"
    big.mkdir(parents=True)
    frame = np.random.default_rng(0).random((512, 256))
    with h5py.File(big / "frames.h5", "w") as f:
        data = f.create_dataset("frames", (frames, 512, 256), "f8", chunks=(1, 512, 256))
        for index in range(frames):
            data[index] = frame + index
    build_catalog(work / "catalog.db", {"tree": tree, "frames": big})
    marker.write_text(json.dumps(state))
    return work / "catalog.db"


def listing_baseline(api: str) -> float:
    """Seconds to fetch every container's listing below ``tree`` with plain httpx."""
    start = time.perf_counter()
    list_every_container(api, "tree")
    return time.perf_counter() - start


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    catalog = setup(OUTPUT, args.nodes, args.frames, args.fresh)
    work = OUTPUT / "runs"
    port = free_port()
    with serving(tiled_serve_catalog(catalog, catalog.parent, port, "--public"), port) as server:
        api = f"{server.url}/api/v1"
        from tiled.client import from_uri

        rows = []
        baseline = statistics.median(listing_baseline(api) for _ in range(args.runs))
        rows.append(("listing with plain httpx (baseline)", f"{baseline:.2f} s", "1.00"))

        def lazy_tree() -> None:
            shutil.rmtree(work, ignore_errors=True)
            tiled_archive.download(from_uri(api)["tree"], work / "tree", lazy=True)

        seconds = statistics.median(timed(lazy_tree) for _ in range(args.runs))
        rows.append(
            ("download --lazy, in-process", f"{seconds:.2f} s", f"{seconds / baseline:.2f}")
        )
        shutil.rmtree(work, ignore_errors=True)
        command = [sys.executable, "-m", "tiled_archive.cli", "download", api, "tree"]
        command += ["--lazy", "-q", "-o", str(work / "cli")]
        seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
        rows.append(
            ("tiled-archive download --lazy (whole command)", f"{seconds:.2f} s",
             f"{seconds / baseline:.2f}")
        )  # fmt: skip

        with CountingProxy(port) as proxy:
            shutil.rmtree(work, ignore_errors=True)
            proxied = from_uri(f"{proxy.url}/api/v1")["frames"]
            tiled_archive.download(proxied, work / "frames", lazy=True)
            with tiled_archive.open(work / "frames") as archive:
                start = before = proxy.received
                archive["frames/frames/frames"][args.frames // 2]
                first = proxy.received - before
                before = proxy.received
                archive["frames/frames/frames"][args.frames // 2]
                again = proxy.received - before
                for index in range(0, args.frames, 4):  # a quarter of the frames
                    archive["frames/frames/frames"][index]
            rows.append(
                ("first read of one 1 MiB frame", f"{first / MIB:.2f} MiB", f"{first / MIB:.2f}")
            )
            rows.append(("the same frame again", f"{again / MIB:.2f} MiB", f"{again / MIB:.2f}"))
            manifest = json.loads((work / "frames" / "tiled-archive.json").read_text())
            payload = sum(entry["size"] for entry in manifest["files"])
            fetch(work / "frames")
            moved = proxy.received - start
            rows.append(
                ("read a quarter lazily, then fetch the rest: bytes moved",
                 f"{moved / MIB:.0f} MiB", f"{moved / payload:.3f} × payload")
            )  # fmt: skip
            before = proxy.received
            tiled_archive.download(proxied, work / "frames.zip", streamed=False)
            eager = proxy.received - before
            rows.append(
                ("then an eager download of the same node", f"{eager / MIB:.2f} MiB",
                 f"{eager / payload:.3f} × payload")
            )  # fmt: skip
    table = Table(title=f"lazy archives ({args.nodes} nodes; HDF5 of {args.frames} MiB)")
    for column in ("case", "value", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
