"""Validation throughput against bagit-python, measured in one run on the same payload.

    .venv/bin/python benchmarks/validate.py [--size-mb 1000] [--runs 5] [--fresh]

Not a test: nothing is asserted about timings. Setup (cached under ``benchmarks/output/``, which
git ignores) is the pack benchmark's: 16 ``.npy`` files of random float64 totalling ``--size-mb``
MB, archived by ``create()`` as a directory, then packed to ZIP by ``convert()``.

Timed, each the median of ``--runs`` rounds (every case once per round, interleaved), with
the page cache warm:

- bagit-python on the directory: ``bagit.py --validate --processes 2`` (every SHA-256 checked)
  and ``bagit.py --validate --fast`` (Payload-Oxum only);
- ours: ``validate()`` full and fast, on the directory and on the ZIP;
- the SHA-256 floor: the payload hashed on both cores (``hashlib.file_digest`` in two threads),
  the least a full check can cost.

Each is timed twice: as a command (a fresh process, as a user runs it: ``.venv/bin/bagit.py``,
``.venv/bin/tiled-archive validate``), and as a library call in this process (``bagit.Bag(...)
.validate(...)``, ``tiled_archive.validator.validate(...)``), which leaves out interpreter
start-up and imports. Ratios compare like with like (command with command, call with call),
each against bagit's figure for the same kind of check: full against ``--processes 2``, fast
against ``--fast``. GB/s is payload bytes (10**9) per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pack import DEFAULT_OUTPUT, MB, setup, warm
from rich.console import Console
from rich.table import Table

from tiled_archive.validator import validate
from tiled_archive.writer import convert

BIN = Path(sys.executable).parent
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


@dataclass(frozen=True)
class Case:
    tool: str
    check: str  # "full" or "fast"
    form: str
    command: list[str]
    call: Callable[[], object]


def cases(directory: Path, archive: Path) -> list[Case]:
    import bagit

    ours = [str(BIN / "tiled-archive"), "validate"]
    listed = [
        Case(
            "bagit.py",
            "full",
            "directory",
            [str(BIN / "bagit.py"), "--validate", "--processes", "2", str(directory)],
            lambda: bagit.Bag(str(directory)).validate(processes=2),
        ),
        Case(
            "bagit.py",
            "fast",
            "directory",
            [str(BIN / "bagit.py"), "--validate", "--fast", str(directory)],
            lambda: bagit.Bag(str(directory)).validate(fast=True),
        ),
        Case(
            "SHA-256 floor",
            "full",
            "directory",
            [sys.executable, "-c", FLOOR_SCRIPT, str(directory)],
            lambda: sha256_floor(directory),
        ),
    ]
    for path, form in ((directory, "directory"), (archive, "zip")):
        for fast in (False, True):
            listed.append(
                Case(
                    "tiled-archive",
                    "fast" if fast else "full",
                    form,
                    [*ours, *(["--fast"] if fast else []), str(path)],
                    lambda path=path, fast=fast: _valid(validate(path, fast=fast)),
                )
            )
    return listed


def sha256_floor(directory: Path) -> None:
    """The payload's SHA-256 on both cores (a file per thread at a time, largest first, as
    the validator's pool): the least a full check can cost."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    def digest(path: Path) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    files = sorted(
        (p for p in (directory / "data").rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size
    )
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(digest, files))


#: The floor as a command: the same in a fresh interpreter, start-up included as for the
#: tools' commands (standard library only, as little as a command can import).
FLOOR_SCRIPT = """
import hashlib, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def digest(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()

files = [p for p in (Path(sys.argv[1]) / "data").rglob("*") if p.is_file()]
files.sort(key=lambda p: -p.stat().st_size)
with ThreadPoolExecutor(2) as pool:
    list(pool.map(digest, files))
"""


def _valid(report: object) -> None:
    if not report.valid:  # type: ignore[attr-defined]
        raise SystemExit(f"benchmark archive is invalid: {report.problems}")  # type: ignore[attr-defined]


def run_command(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="payload size (default 1000)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="cache folder")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.runs < 1:
        parser.error("--size-mb and --runs must be positive")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as benchmarks/startup.py: bytecode kept

    bench = setup(args.output / f"validate-{args.size_mb}mb", args.size_mb, args.fresh)
    archive = bench.work / "bench.zip"
    if args.fresh or not archive.is_file():
        log.print(f"setup: packing {archive}")
        archive.unlink(missing_ok=True)
        convert(bench.bench_dir, archive)
    payload = sum(p.stat().st_size for p in (bench.bench_dir / "data").rglob("*") if p.is_file())
    warm(bench.bench_dir)
    warm(archive)
    out.print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; payload "
        f"{payload / MB:,.0f} MB in 16 files; ZIP {archive.stat().st_size / MB:,.0f} MB; "
        f"median of {args.runs} runs, page cache warm"
    )

    # Rounds interleave the cases, so that a slow spell of the machine (other processes, CPU
    # frequency) hits every case alike instead of one case's every run.
    runs = [
        (case, way, run)
        for case in cases(bench.bench_dir, archive)
        for way, run in (
            ("command", lambda case=case: run_command(case.command)),
            ("call", case.call),
        )
    ]
    seconds: dict[tuple[str, str, str, str], list[float]] = {}
    for round_number in range(args.runs + 1):  # round 0 is untimed: imports, caches
        log.print(f"round {round_number}/{args.runs}")
        for case, way, run in runs:
            start = time.perf_counter()
            run()
            if round_number:
                key = (case.tool, case.check, case.form, way)
                seconds.setdefault(key, []).append(time.perf_counter() - start)
    results = {key: statistics.median(values) for key, values in seconds.items()}

    table = Table(title="Validation: seconds (median), GB/s of payload, ratio to bagit-python")
    numbers = ("seconds", "GB/s", "× bagit", "× floor")
    for column in ("tool", "check", "form", "way", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for (tool, check, form, way), seconds in results.items():
        baseline = results[("bagit.py", check, "directory", way)]
        floor = results[("SHA-256 floor", "full", "directory", way)]
        table.add_row(
            tool,
            check,
            form,
            way,
            f"{seconds:.3f}",
            f"{payload / 1e9 / seconds:.2f}",
            f"{baseline / seconds:.2f}",
            f"{seconds / floor:.2f}" if check == "full" else "",
        )
    out.print(table)
    out.print(
        "× bagit: bagit's time over ours (above 1: faster than bagit), for the same check "
        "(full: bagit --processes 2; fast: bagit --fast) invoked the same way. × floor: the "
        "time over the SHA-256 floor's (both cores hashing the payload), invoked the same way "
        "(the goal: at most 1.15)."
    )


if __name__ == "__main__":
    main()
