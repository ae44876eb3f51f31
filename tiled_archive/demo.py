"""``make demo``: build an archive from generated sample data and use it without extracting it.

Run as ``python -m tiled_archive.demo OUTPUT_DIR``.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.tree import Tree

from .cli.views import verdict
from .reader import open_archive
from .validator import validate
from .writer import convert, create, stock_serve_command


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


def print_tree(console: Console, client, label: str) -> None:
    """The archive's node tree, as the Tiled client sees it."""
    tree = Tree(label)

    def walk(node, branch: Tree) -> None:
        for key, child in node.items():
            family = str(getattr(child.structure_family, "value", child.structure_family))
            shape = getattr(child, "shape", None)
            sub = branch.add(f"{key}  [dim]{family}{' ' + str(shape) if shape else ''}[/]")
            if family == "container":
                walk(child, sub)

    walk(client, tree)
    console.print(tree)


def main(output: str) -> None:
    import tiled_archive

    console = Console()
    out = Path(output)
    shutil.rmtree(out, ignore_errors=True)
    sources = make_sample_data(out / "sample")
    zip_path = create(out / "scan_0042.zip", sources, quiet=False)
    with open_archive(zip_path) as archive:
        manifest = archive.manifest
        console.print(
            f"[bold]{zip_path}[/]: format {manifest.format_version}, "
            f"{len(manifest.files)} files, Payload-Oxum {manifest.payload_oxum}"
        )
    report = validate(zip_path)  # every rule of the spec, checksums included
    console.print(f"tiled-archive validate: {verdict(report)}")
    with tiled_archive.open(zip_path) as client:  # Tiled's own client, served in-process
        print_tree(console, client, f"[bold]tiled_archive.open({str(zip_path)!r})[/]")
        scan = client["scan_0042"]
        console.print("primary/intensity[0, :2, :6], read from inside the ZIP:")
        console.print(scan["primary"]["intensity"][0, :2, :6])
        console.print(scan["baseline"].read().head(3))
    directory = convert(zip_path, out / "scan_0042", quiet=False)
    console.print(f"extracted and relocated: {directory}")
    # Commands to copy: never wrapped at the terminal's width.
    console.print(
        f"serve the ZIP over HTTP:   tiled-archive serve {zip_path} --public", soft_wrap=True
    )
    console.print(
        f"serve with stock Tiled:    {shlex.join(stock_serve_command(directory))}", soft_wrap=True
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
