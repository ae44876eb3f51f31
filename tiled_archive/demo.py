"""``make demo``: build an archive from generated sample data and use it without extracting it.

Run as ``python -m tiled_archive.demo OUTPUT_DIR``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.tree import Tree

from .reader import open_archive
from .writer import convert, create


def make_sample_data(root: Path) -> list[Path]:
    """A small beamline-like data set: an HDF5 scan, a TIFF image sequence and a CSV table."""
    import h5py
    import pandas as pd
    import tifffile

    scan = root / "scan_0042"
    frames = scan / "detector"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(42)
    with h5py.File(scan / "primary.h5", "w") as f:
        f.attrs["sample"] = "silicon standard"
        f.create_dataset("intensity", data=rng.poisson(100, size=(50, 64, 64)).astype("uint16"))
        f.create_dataset("energy_kev", data=np.linspace(8.0, 9.0, 50))
    for i in range(5):
        tifffile.imwrite(frames / f"frame_{i:03d}.tif", rng.integers(0, 255, (32, 32), "uint8"))
    pd.DataFrame({"time_s": np.arange(10.0), "temperature_k": 295 + rng.normal(0, 0.1, 10)}).to_csv(
        scan / "baseline.csv", index=False
    )
    return [scan]


def main(output: str) -> None:
    console = Console()
    out = Path(output)
    shutil.rmtree(out, ignore_errors=True)
    sources = make_sample_data(out / "sample")
    zip_path = create(out / "scan_0042.zip", sources, quiet=False)
    directory = convert(zip_path, out / "scan_0042", quiet=False)
    with open_archive(zip_path) as archive:
        manifest = archive.manifest
        tree = Tree(
            f"[bold]{zip_path}[/] (format {manifest.format_version}, "
            f"{len(manifest.files)} files, Payload-Oxum {manifest.payload_oxum})"
        )
        for entry in manifest.files:
            tree.add(f"{entry.path}  {entry.size} B  sha256 {entry.sha256[:12]}…")
        console.print(tree)
        import h5py

        # h5py reads the HDF5 member through a positional file object: nothing is extracted.
        with h5py.File(archive.open("data/scan_0042/primary.h5"), "r") as f:
            console.print("intensity[0, :2, :6] read from inside the ZIP:")
            console.print(f["intensity"][0, :2, :6])
    console.print(f"extracted and relocated: {directory}")
    console.print(
        f"serve it with stock Tiled: tiled serve catalog {directory / 'catalog.db'} "
        f"-r {directory / 'data'} --public"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
