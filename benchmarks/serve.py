"""Serving speed: in-process ZIP and directory vs HTTP (ours and stock `tiled serve catalog`).

Prints medians and ratios against stock Tiled over loopback HTTP on the same (extracted)
archive, all measured in one run; plus the first listing page of a 10,000-node archive.

    python benchmarks/serve.py [--repeats 30] [--nodes 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

import tiled_archive  # noqa: E402
from tiled_archive.testing import free_port, serving, tiled_serve_catalog  # noqa: E402
from tiled_archive.writer import convert, create  # noqa: E402

OUTPUT = Path(__file__).parent / "output" / "serve"
FRAMES = 500


def build_small(out: Path) -> dict[str, Path]:
    import h5py

    src = out / "src" / "a"
    if not (out / "small.zip").exists():
        src.mkdir(parents=True, exist_ok=True)
        np.save(src / "frame.npy", np.arange(64 * 64, dtype="float64").reshape(64, 64))
        with h5py.File(src / "scan.h5", "w") as f:
            f["intensity"] = np.arange(FRAMES * 64 * 64, dtype="uint16").reshape(FRAMES, 64, 64)
            f.attrs["sample"] = "Si"
        convert(create(out / "small-dir", [src]), out / "small.zip")
        convert(out / "small.zip", out / "small-extracted")
    return {
        "zip": out / "small.zip",
        "dir": out / "small-dir",
        "extracted": out / "small-extracted",
    }


def build_large(out: Path, nodes: int) -> Path:
    """An archive of ``nodes`` tiny arrays in folders of 100 (registered through Tiled)."""
    path = out / f"nodes-{nodes}.zip"
    if not path.exists():
        src = out / f"nodes-src-{nodes}" / "many"
        for i in range(nodes):
            folder = src / f"group_{i // 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            # A trailing letter: names ending in digits would be grouped as one sequence.
            np.save(folder / f"item_{i:05d}x.npy", np.array([i]))
        create(path, [src], quiet=False)
    return path


def median_ms(action, repeats: int) -> float:
    action()  # warm up caches and lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def operations(client) -> dict[str, object]:
    """Each a few requests, as a user's line of code makes them (node lookups included)."""
    frames = iter(range(10**9))
    return {
        "metadata (same node)": lambda: client["a"]["scan"].metadata,
        "64x64 array (same)": lambda: client["a"]["frame"][:],
        "HDF5 slice (new frame each)": lambda: client["a"]["scan"]["intensity"][
            next(frames) % FRAMES, :16, :16
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=10_000)
    args = parser.parse_args()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    paths = build_small(OUTPUT)
    from tiled.client import from_uri

    results: dict[str, dict[str, float]] = {}
    extracted = paths["extracted"]
    over_http = {
        "stock tiled serve catalog, HTTP": lambda port: tiled_serve_catalog(
            extracted / "catalog.db", extracted / "data", port, "--public"
        ),
        "tiled-archive serve ZIP, HTTP": lambda port: [
            str(Path(sys.executable).parent / "tiled-archive"),
            *("serve", str(paths["zip"]), "--public", "--port", str(port)),
        ],
    }
    for label, command in over_http.items():
        port = free_port()
        with serving(command(port), port) as server:
            client = from_uri(server.url)
            results[label] = {
                name: median_ms(op, args.repeats) for name, op in operations(client).items()
            }
    for form in ("zip", "dir"):
        with tiled_archive.open(paths[form]) as client:
            results[f"tiled_archive.open({form}), in-process"] = {
                name: median_ms(op, args.repeats) for name, op in operations(client).items()
            }

    baseline = results["stock tiled serve catalog, HTTP"]
    names = list(baseline)
    print(f"\nmedian ms over {args.repeats} calls (ratio = stock HTTP / this; higher is faster)")
    print(f"{'path':40s}" + "".join(f"{n:>30s}" for n in names))
    print("(a response cache serves repeated identical requests; new frames are never cached)")
    for label, row in results.items():
        cells = "".join(f"{row[n]:>20.1f} ({baseline[n] / row[n]:4.1f}x)" for n in names)
        print(f"{label:40s}{cells}")

    large = build_large(OUTPUT, args.nodes)
    start = time.perf_counter()
    with tiled_archive.open(large) as client:
        opened = time.perf_counter() - start
        start = time.perf_counter()
        groups = client["many"]
        first_page = list(groups)[:100]
        count = len(list(groups["group_000"]))
        listed = time.perf_counter() - start
    print(
        f"\n{args.nodes}-node ZIP archive: open {opened * 1000:.0f} ms, first listing page "
        f"({len(first_page)} groups, {count} items in one) {listed * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
