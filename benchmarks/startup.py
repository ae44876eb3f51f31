"""Fixed costs a user feels on small jobs, against Tiled's own start-up in the same run.

    .venv/bin/python benchmarks/startup.py [--runs 5]

Not a test: nothing is asserted about timings. Every case is a fresh process, timed from
spawn to exit, the median of ``--runs`` rounds (every case once per round, interleaved, so a
loaded machine slows them alike). The anchor is ``python -c "import tiled.server.app"``: the
least any tool that serves Tiled's API in-process must pay. Cases:

- ``tiled-archive create`` of a tiny tree (one 10-element ``.npy``) into a new directory;
- ``tiled-archive create`` of the same tree into a ZIP;
- ``tiled_archive.open()`` of that archive and a first read of the array, in a fresh interpreter;
- ``tiled_archive.from_catalog()`` of a relocated copy's ``catalog.db`` (its ``data/`` the
  readable storage) and the same read;
- ``tiled-archive validate --fast`` of it, and ``bagit.py --validate --fast`` of the same
  directory (the habit being compared against; ``benchmarks/validate.py`` times full checks of
  1 GB).

Peak RSS of each command comes from ``wait4``. Setup lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

BIN = Path(sys.executable).parent
PYTHON = sys.executable
OPEN_AND_READ = (
    "import sys, tiled_archive; c = tiled_archive.open(sys.argv[1]); "
    "assert c['tiny'].read().tolist() == list(range(10))"
)
FROM_CATALOG_AND_READ = (
    "import sys, tiled_archive; c = tiled_archive.from_catalog(sys.argv[1], [sys.argv[2]]); "
    "assert c['tiny'].read().tolist() == list(range(10))"
)
ANCHOR = "import tiled.server.app"

out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


@dataclass(frozen=True)
class Case:
    name: str
    command: list[str]
    clear: Path | None = None  # removed before each run (a create's destination)


@dataclass
class Timing:
    seconds: list[float]
    peak_rss: int  # bytes, the largest seen

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run(case: Case) -> tuple[float, int]:
    """Run one case in a fresh process; return (wall seconds, peak RSS bytes)."""
    if case.clear is not None:
        if case.clear.is_dir():
            shutil.rmtree(case.clear)
        case.clear.unlink(missing_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: nothing can fill and block
        process = subprocess.Popen(case.command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            output.seek(0)
            text = output.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(case.command)} failed:\n{text}")
    return elapsed, usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")

    # Children write and use bytecode, as an installed package has it (pip compiles on install);
    # with PYTHONDONTWRITEBYTECODE an editable checkout recompiles its modules on every run.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="ta-startup-") as tmp:
        work = Path(tmp)
        source = work / "src"
        source.mkdir()
        np.save(source / "tiny.npy", np.arange(10))
        archive = work / "tiny-archive"
        cli = str(BIN / "tiled-archive")
        subprocess.run([cli, "create", "-q", str(archive), str(source / "tiny.npy")], check=True)
        relocated = work / "relocated"
        shutil.copytree(archive, relocated)
        subprocess.run([cli, "relocate", str(relocated)], check=True, capture_output=True)
        cases = [
            Case("python -c 'import tiled.server.app' (anchor)", [PYTHON, "-c", ANCHOR]),
            Case(
                "tiled-archive create (directory)",
                [cli, "create", "-q", str(work / "new"), str(source / "tiny.npy")],
                clear=work / "new",
            ),
            Case(
                "tiled-archive create (zip)",
                [cli, "create", "-q", str(work / "new.zip"), str(source / "tiny.npy")],
                clear=work / "new.zip",
            ),
            Case("open() + first read", [PYTHON, "-c", OPEN_AND_READ, str(archive)]),
            Case(
                "from_catalog() + first read",
                [
                    PYTHON,
                    "-c",
                    FROM_CATALOG_AND_READ,
                    str(relocated / "catalog.db"),
                    str(relocated / "data"),
                ],
            ),
            Case(
                "bagit.py --validate --fast",
                [str(BIN / "bagit.py"), "--validate", "--fast", str(archive)],
            ),
            Case("tiled-archive validate --fast", [cli, "validate", "--fast", str(archive)]),
        ]
        for case in cases:  # one untimed round: page cache and .pyc files warm
            run(case)
        timings = {case.name: Timing([], 0) for case in cases}
        for round_ in range(args.runs):
            log.print(f"round {round_ + 1}/{args.runs}")
            for case in cases:
                seconds, rss = run(case)
                timing = timings[case.name]
                timing.seconds.append(seconds)
                timing.peak_rss = max(timing.peak_rss, rss)

    anchor = timings[cases[0].name].median
    bagit_fast = timings["bagit.py --validate --fast"].median
    table = Table(title=f"Start-up costs, median of {args.runs} fresh processes")
    for column in ("case", "seconds", "× anchor", "× bagit --fast", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case in cases:
        timing = timings[case.name]
        versus_bagit = f"{timing.median / bagit_fast:.2f}" if "validate" in case.name else ""
        table.add_row(
            case.name,
            f"{timing.median:.3f}",
            f"{timing.median / anchor:.2f}",
            versus_bagit,
            f"{timing.peak_rss / 1e6:.0f}",
        )
    out.print(table)
    out.print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
