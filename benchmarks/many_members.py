"""Validating a ZIP of many members: the whole command, and how long its report is.

    .venv/bin/python benchmarks/many_members.py [--members 200000] [--runs 3] [--fresh]

Not a test: nothing is asserted about timings. Setup (cached under ``benchmarks/output/``): a
one-file archive made by ``create()``, to which ``--members`` one-byte members are appended
with ``zipfile`` (no manifest lists them, no asset names them, none is aligned: three problems
each, the worst case for the report). Timed, each the median of ``--runs`` rounds with the page
cache warm, as commands (a fresh process each, start-up included):

- ``tiled-archive validate`` (full: every member's local header read, every member hashed) and
  ``validate --fast``, with the lines they print and the size of ``validate --json``;
- the anchors: ``unzip -t`` (Info-ZIP tests every member's CRC-32; its output is a line per
  member) and ``python -m zipfile -t`` on the same file.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tiled_archive.writer import create

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
out = Console()
NEWLINE = b"\n"
log = Console(stderr=True, style="dim")


def setup(folder: Path, members: int, fresh: bool) -> Path:
    archive = folder / f"many-{members}.zip"
    if archive.exists() and not fresh:
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "many-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir()
    np.save(source / "x.npy", np.arange(10))
    archive.unlink(missing_ok=True)
    create(archive, [source])
    with zipfile.ZipFile(archive, "a") as handle:
        for index in range(members):
            handle.writestr(f"data/extra/f{index:07d}.bin", b"x")
    return archive


def timed(command: list[str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start, done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup")
    parser.add_argument("--output", type=Path, default=HERE / "output")
    args = parser.parse_args(argv)
    archive = setup(args.output, args.members, args.fresh)
    commands = {
        "tiled-archive validate": [str(BIN / "tiled-archive"), "validate", str(archive)],
        "tiled-archive validate --fast": [
            str(BIN / "tiled-archive"),
            "validate",
            "--fast",
            str(archive),
        ],
        "tiled-archive validate --json": [
            str(BIN / "tiled-archive"),
            "validate",
            "--json",
            str(archive),
        ],
        "python -m zipfile -t": [sys.executable, "-m", "zipfile", "-t", str(archive)],
    }
    if shutil.which("unzip"):
        commands["unzip -tq"] = ["unzip", "-tq", str(archive)]
    times: dict[str, list[float]] = {name: [] for name in commands}
    output: dict[str, bytes] = {}
    for round_ in range(args.runs):
        for name, command in commands.items():
            seconds, printed = timed(command)
            times[name].append(seconds)
            output[name] = printed
        log.print(f"round {round_ + 1}/{args.runs}")
    anchor = statistics.median(times.get("unzip -tq") or times["python -m zipfile -t"])
    table = Table(title=f"Validating a ZIP of {args.members:,} unlisted members (median, s)")
    for column in ("command", "seconds", "x anchor", "lines out", "bytes out"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name in commands:
        median = statistics.median(times[name])
        printed = output[name]
        table.add_row(
            name,
            f"{median:.2f}",
            f"{median / anchor:.2f}",
            f"{printed.count(NEWLINE):,}",
            f"{len(printed):,}",
        )
    out.print(table)
    out.print("anchor: unzip -tq when installed, else python -m zipfile -t")


if __name__ == "__main__":
    main()
