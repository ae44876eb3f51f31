"""Loading a 10,000-node archive into a Tiled catalog, against Tiled's own registration.

    .venv/bin/python benchmarks/load.py [--nodes 10000] [--runs 3] [--fresh]

Not a test: nothing is asserted about timings. Needs a PostgreSQL server: the URI (without a
database) in ``TILED_ARCHIVE_TEST_POSTGRES``, else ``.ci/postgres`` is run to start one.

Setup, cached under ``benchmarks/output/load-<nodes>/``: ``--nodes`` tiny ``.npy`` files in
folders of 100 (named without digits, so that each file is a node), and the directory archive
``create()`` makes of them. Timed, each round in a
fresh database copied from a template Tiled's ``tiled catalog init`` made (so Tiled's init,
alembic in a subprocess, is timed once on its own) and an empty data folder:

- ``tiled-archive load`` (the command, start-up included) into PostgreSQL, and into SQLite;
- ``load()`` as a call into PostgreSQL;
- the anchor, once: Tiled's own registration of the same files into PostgreSQL, ``tiled
  register`` against stock ``tiled serve catalog`` on loopback (registration goes through a
  server: Tiled has no offline command for it).
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
import uuid
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tiled_archive.testing import free_port, postgres_admin, serving
from tiled_archive.writer import create
from tiled_archive.writer.load import load

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPLATE = "tiled_archive_bench_template"
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


def letters(number: int) -> str:
    """A name without digits (Tiled registers numbered files as one sequence node)."""
    name = ""
    while True:
        number, digit = divmod(number, 26)
        name = "abcdefghijklmnopqrstuvwxyz"[digit] + name
        if number == 0:
            return name


def setup(work: Path, nodes: int, fresh: bool) -> Path:
    archive = work / "archive"
    if archive.is_dir() and not fresh:
        return archive
    shutil.rmtree(work, ignore_errors=True)
    files = work / "files"
    for i in range(nodes):
        folder = files / letters(i // 100)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{letters(i % 100)}.npy", np.arange(i % 7 + 1))
    log.print(f"creating an archive of {nodes} files")
    create(archive, sorted(files.iterdir()), quiet=True)
    return archive


def fresh_database(server: str, template: bool = True) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    options = f" TEMPLATE {TEMPLATE}" if template else ""
    postgres_admin(server, f"CREATE DATABASE {name}{options}")
    return f"{server}/{name}"


def drop(server: str, uri: str) -> None:
    postgres_admin(server, f"DROP DATABASE IF EXISTS {uri.rsplit('/', 1)[1]} WITH (FORCE)")


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="files (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup")
    args = parser.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as benchmarks/startup.py: bytecode kept
    server = (
        os.environ.get("TILED_ARCHIVE_TEST_POSTGRES")
        or subprocess.run(
            [ROOT / ".ci" / "postgres"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    work = ROOT / "benchmarks" / "output" / f"load-{args.nodes}"
    archive = setup(work, args.nodes, args.fresh)
    postgres_admin(
        server, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)", f"CREATE DATABASE {TEMPLATE}"
    )
    init = timed(
        lambda: subprocess.run(
            [BIN / "tiled", "catalog", "init", f"{server}/{TEMPLATE}"], check=True
        )
    )
    data = work / "data"
    rows: dict[str, list[float]] = {
        "command, PostgreSQL": [],
        "command, SQLite": [],
        "call, PostgreSQL": [],
    }
    for round_ in range(args.runs):
        log.print(f"round {round_ + 1}/{args.runs}")
        for case in rows:
            shutil.rmtree(data, ignore_errors=True)
            if case.endswith("SQLite"):
                target = str(work / "catalog.db")
                Path(target).unlink(missing_ok=True)
            else:
                target = fresh_database(server)
            command = [BIN / "tiled-archive", "load", "-q", archive, target, "--data", data]
            if case.startswith("call"):
                rows[case].append(timed(lambda t=target: load(archive, t, data)))
            else:
                rows[case].append(timed(lambda c=command: subprocess.run(c, check=True)))
            if not case.endswith("SQLite"):
                drop(server, target)
    log.print("anchor: tiled register through stock tiled serve catalog")
    target = fresh_database(server)
    port = free_port()
    serve = [BIN / "tiled", "serve", "catalog", target, "-r", work / "files", "-w", work / "w"]
    serve += ["--api-key", "secret", "--port", port]
    with serving(serve, port, log=work / "stock.log"):
        register = [BIN / "tiled", "register", f"http://127.0.0.1:{port}", work / "files"]
        environment = {**os.environ, "TILED_API_KEY": "secret"}
        anchor = timed(lambda: subprocess.run(register, check=True, env=environment))
    drop(server, target)

    table = Table(title=f"Loading {args.nodes:,} nodes, median of {args.runs} (anchor: once)")
    for column in ("case", "seconds", "nodes/s", "x anchor"):
        table.add_column(column, justify="left" if column == "case" else "right")
    table.add_row(
        "tiled register via stock serve (anchor)",
        f"{anchor:.2f}",
        f"{args.nodes / anchor:,.0f}",
        "1.00",
    )
    table.add_row("tiled catalog init (PostgreSQL, once)", f"{init:.2f}", "", "")
    for case, seconds in rows.items():
        median = statistics.median(seconds)
        table.add_row(
            f"tiled-archive load, {case}",
            f"{median:.2f}",
            f"{args.nodes / median:,.0f}",
            f"{median / anchor:.3f}",
        )
    out.print(table)
    out.print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs;"
        " x anchor: the case's time over the anchor's"
    )


if __name__ == "__main__":
    main()
