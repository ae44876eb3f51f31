"""Archives of 1,000 to 100,000 nodes: what each command costs as the node count grows.

    .venv/bin/python benchmarks/scale.py [--sizes 1000,10000,100000] [--runs 3]
        [--download-sizes 1000,10000] [--create-sizes 1000] [--workers 4] [--fresh]

Not a test: nothing is asserted about timings. Setup, cached under ``benchmarks/output/scale/``
(``--fresh`` rebuilds): for each size, a ZIP of that many one-file array nodes (an ``.npy``
of 8 int64 each, 192 bytes, in containers of 100; metadata ``{"index": node id}``, a
container's ``{"group": name}``) built by ``scale_build.build`` (the catalog's rows written as
spec Appendix A says, the archive by the reference writer), and its directory form: the ZIP
extracted by ``tiled-archive extract`` (relocated, so stock Tiled serves it).

Every case is a fresh process timed whole, from spawn to exit, the median of ``--runs`` rounds
(every case of a size once per round, interleaved); peak RSS is the largest ``wait4`` gave
(every process spawned by a small launcher process: see ``Launcher``). Each size's column
gives the seconds, the ratio to the smallest size's figure and the ratio to the case's anchor
at that size (time over the anchor's time: above 1 is slower). Cases:

- ``open()`` + first listing (``tiled_archive.open`` of the ZIP, the first ten keys of the
  root): cold, in a fresh ``TILED_ARCHIVE_CACHE``, and warm, in one cache root that two
  untimed runs filled (kept verdicts); ``open()`` + a search (warm): the root searched for
  the ``group`` of the middle node's container, that container for the node's ``index``.
  Anchor: the same client calls (``from_uri``) against stock ``tiled serve catalog`` on the
  directory form, started beforehand and sent one untimed listing (neither counted): the
  client's process is timed from spawn to exit.
- ``tiled-archive info`` of the ZIP (no anchor); ``validate --fast`` (anchor ``bagit.py
  --validate --fast`` of the directory form) and full ``validate`` (anchors ``unzip -t`` for
  the ZIP, ``bagit.py --validate --processes 2`` for the directory), of the ZIP and of the
  directory form.
- ``tiled-archive extract`` of the ZIP into a new folder (anchor ``unzip -q -d``) and
  ``tiled-archive load`` of it into a new SQLite catalog and data folder (anchor: ``tiled
  register`` of as many files, where ``--create-sizes`` measured it; see below).
- At ``--download-sizes`` only (default 1,000 and 10,000; 100,000 takes very long):
  ``tiled-archive download`` of the whole tree from stock ``tiled serve catalog`` into a new
  ZIP with a new download cache (``--workers`` transfers). Anchor: a Python process fetching
  the same files' bytes (``/api/v1/asset/bytes/...?id=``, the endpoint the downloader uses)
  with plain ``httpx`` streaming GETs into files on a pool of as many threads; its URLs are
  listed beforehand from the catalog (untimed), where the downloader walks the tree itself.
- At ``--create-sizes`` only (default 1,000): ``tiled-archive create`` into a ZIP of that many
  ``.npy`` files named without digits (Tiled's registration makes one node of numbered
  ``.npy`` files), against ``tiled register`` of the same folder through stock ``tiled serve
  catalog --init`` on a new SQLite catalog (registration goes through a server: Tiled has no
  offline command), the server started before each run and not counted.

Every tiled-archive command but the warm cases runs in a fresh ``TILED_ARCHIVE_CACHE``, as
on the first sight of an archive. The page cache is warm (nothing drops it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scale_build
from load import letters
from rich.console import Console
from rich.table import Table

from tiled_archive.rules.names import FORMAT_VERSION, __version__
from tiled_archive.testing import free_port, serving, tiled_serve_catalog

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "output" / "scale"
BIN = Path(sys.executable).parent
PYTHON = sys.executable
CLI = str(BIN / "tiled-archive")
API_KEY = "secret"

OPEN_AND_LIST = """
import itertools, sys, tiled_archive
with tiled_archive.open(sys.argv[1]) as client:
    assert len(list(itertools.islice(client, 10))) == 10
"""
STOCK_LIST = """
import itertools, sys
from tiled.client import from_uri
client = from_uri(sys.argv[1])
assert len(list(itertools.islice(client, 10))) == 10
"""
SEARCH = """
def search(root, group, index, key):
    from tiled.queries import Key
    containers = list(root.search(Key("group") == group))
    assert containers == [group], containers
    found = list(root[group].search(Key("index") == index))
    assert found == [key], found
"""
OPEN_AND_SEARCH = (
    SEARCH
    + """
import sys, tiled_archive
with tiled_archive.open(sys.argv[1]) as client:
    search(client, sys.argv[2], int(sys.argv[3]), sys.argv[4])
"""
)
STOCK_SEARCH = (
    SEARCH
    + """
import sys
from tiled.client import from_uri
search(from_uri(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])
"""
)
PLAIN_GETS = """
import json, os, sys
from concurrent.futures import ThreadPoolExecutor
import httpx

api, jobs, folder, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(folder)
with open(jobs) as listing:
    jobs = json.load(listing)

def get(job):
    number, path, asset = job
    with client.stream(
        "GET", f"{api}/asset/bytes/{path}", params={"id": asset},
        headers={"Accept-Encoding": "identity"},
    ) as response:
        response.raise_for_status()
        with open(f"{folder}/{number}.bin", "wb") as sink:
            for chunk in response.iter_raw(1 << 20):
                sink.write(chunk)

with httpx.Client() as client, ThreadPoolExecutor(workers) as pool:
    list(pool.map(get, jobs))
"""

LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["output"], "wb") as output:
        start = time.perf_counter()
        process = subprocess.Popen(
            job["command"], stdout=output, stderr=subprocess.STDOUT, env=job["env"]
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    reply = {"seconds": seconds, "rss": usage.ru_maxrss * 1024}
    print(json.dumps({**reply, "code": os.waitstatus_to_exitcode(status)}), flush=True)
"""

out = Console(width=max(180, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


# -- Setup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    size: int
    zip: Path
    directory: Path  # the ZIP extracted (relocated): the directory form


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def built(size: int, fresh: bool) -> Built:
    """The ZIP of ``size`` nodes and its extracted directory form, built once and kept."""
    archive = Built(size, OUTPUT / f"nodes-{size}.zip", OUTPUT / f"nodes-{size}")
    marker = OUTPUT / f"nodes-{size}.json"
    state = {"nodes": size, "format": FORMAT_VERSION, "version": __version__}
    if (
        not fresh
        and marker.is_file()
        and json.loads(marker.read_text()) == state
        and archive.zip.is_file()
        and (archive.directory / "catalog.db").is_file()
    ):
        return archive
    for path in (marker, archive.zip, archive.directory):
        remove(path)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log.print(f"setup: building a ZIP of {size:,} nodes")
    start = time.perf_counter()
    scale_build.build(size, archive.zip, OUTPUT / "runs")
    log.print(f"setup: built in {time.perf_counter() - start:.1f} s; extracting it")
    with tempfile.TemporaryDirectory(prefix="ta-scale-cache-") as cache:
        subprocess.run(
            [CLI, "extract", "-q", str(archive.zip), str(archive.directory)],
            check=True,
            env={**os.environ, "TILED_ARCHIVE_CACHE": cache},
            capture_output=True,
        )
    marker.write_text(json.dumps(state))
    return archive


def create_source(size: int) -> Path:
    """``size`` small ``.npy`` files in folders of 100, named without digits (kept)."""
    folder = OUTPUT / f"create-source-{size}" / "runs"
    for index in range(size):
        path = folder / f"g{index // 100:04d}" / f"r{letters(index % 100)}.npy"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.arange(8) + index)
    return folder


def middle_node(size: int) -> tuple[str, int, str]:
    """The container, node id (its ``index``) and key of the middle node of ``size``: node
    ids run container, its 100 nodes, next container... from 1 (scale_build.catalog)."""
    index = size // 2
    group = index // scale_build.PER_CONTAINER
    node_id = group * (scale_build.PER_CONTAINER + 1) + index % scale_build.PER_CONTAINER + 2
    return f"g{group:04d}", node_id, f"r{index:06d}"


def asset_jobs(catalog: Path, target: Path) -> None:
    """Every asset of ``catalog`` as (number, node path, asset id), into ``target`` (JSON)."""
    connection = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT parent.key || '/' || node.key, asset.id FROM nodes AS node"
            " JOIN nodes AS parent ON node.parent = parent.id"
            " JOIN data_sources AS source ON source.node_id = node.id"
            " JOIN data_source_asset_association AS link ON link.data_source_id = source.id"
            " JOIN assets AS asset ON asset.id = link.asset_id"
            " ORDER BY node.id"
        ).fetchall()
    finally:
        connection.close()
    target.write_text(json.dumps([[n, path, asset] for n, (path, asset) in enumerate(rows)]))


# -- Running cases ------------------------------------------------------------------------------


@dataclass
class Case:
    row: str  # the table's row
    command: list[str]
    anchor: str | None = None  # the row of its anchor
    cache: Path | None = None  # TILED_ARCHIVE_CACHE (a fresh one when also in clear)
    clear: tuple[Path, ...] = ()  # removed before and after each run
    server: list[str] | None = None  # a fresh server for each run, not timed
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class Launcher:
    """Starts every timed process, from a small interpreter of its own: a child's peak RSS
    (``wait4``) counts what the process it was forked from held (Linux records the old
    address space's high-water mark at ``exec``), so children are forked from this one,
    not from the benchmark's (numpy, Tiled, a 100,000-node build), and a child's figure
    below its :attr:`floor` is shown as the floor."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-I", "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.floor = 0
        self.floor = self.spawn(["true"], dict(os.environ), Path(os.devnull))[1]

    def spawn(self, command: list[str], env: dict[str, str], output: Path) -> tuple[float, int]:
        """Run ``command`` to its end: (wall seconds, peak RSS bytes); raise if it failed."""
        assert self.process.stdin and self.process.stdout
        job = {"command": command, "env": env, "output": str(output)}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if reply["code"] != 0:
            text = output.read_bytes().decode(errors="replace")[-4000:]
            raise SystemExit(f"{' '.join(command)} failed ({reply['code']}):\n{text}")
        return reply["seconds"], max(reply["rss"], self.floor)

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait()


def run(launcher: Launcher, case: Case, scratch: Path) -> tuple[float, int]:
    """Run ``case`` once in a fresh process: (wall seconds, peak RSS bytes)."""
    for path in case.clear:
        remove(path)
    env = {**os.environ, **case.env}
    if case.cache is not None:
        env["TILED_ARCHIVE_CACHE"] = str(case.cache)
    server = (
        serving(case.server, case.port, log=scratch / "server.log", timeout=120)
        if case.server
        else contextlib.nullcontext()
    )
    try:
        with server:
            return launcher.spawn(case.command, env, scratch / "output.txt")
    finally:
        for path in case.clear:
            remove(path)


@contextlib.contextmanager
def stock_server(archive: Built, scratch: Path) -> Iterator[str]:
    """Stock ``tiled serve catalog`` on the directory form, warmed by one listing: its API."""
    port = free_port()
    command = tiled_serve_catalog(
        archive.directory / "catalog.db", archive.directory / "data", port, "--public"
    )
    with serving(command, port, log=scratch / "stock.log", timeout=120) as server:
        api = f"{server.url}/api/v1"
        subprocess.run([PYTHON, "-c", STOCK_LIST, api], check=True, stdout=subprocess.DEVNULL)
        yield api


def cases_for(
    archive: Built, api: str, scratch: Path, args: argparse.Namespace, warm: Path
) -> list[Case]:
    size, zip_path, directory = archive.size, str(archive.zip), str(archive.directory)
    cold = scratch / "cache"
    fresh = {"cache": cold, "clear": (cold,)}
    group, node_id, key = middle_node(size)
    where = [group, str(node_id), key]
    cases = [
        Case(
            "open() + first listing, cold",
            [PYTHON, "-c", OPEN_AND_LIST, zip_path],
            anchor="anchor: stock serve, from_uri + first listing",
            **fresh,
        ),
        Case(
            "open() + first listing, warm",
            [PYTHON, "-c", OPEN_AND_LIST, zip_path],
            anchor="anchor: stock serve, from_uri + first listing",
            cache=warm,
        ),
        Case(
            "anchor: stock serve, from_uri + first listing",
            [PYTHON, "-c", STOCK_LIST, api],
        ),
        Case(
            "open() + search, warm",
            [PYTHON, "-c", OPEN_AND_SEARCH, zip_path, *where],
            anchor="anchor: stock serve, from_uri + search",
            cache=warm,
        ),
        Case("anchor: stock serve, from_uri + search", [PYTHON, "-c", STOCK_SEARCH, api, *where]),
        Case("info (ZIP)", [CLI, "info", zip_path], **fresh),
        Case(
            "validate --fast (ZIP)",
            [CLI, "validate", "--fast", zip_path],
            anchor="anchor: bagit.py --validate --fast (dir)",
            **fresh,
        ),
        Case(
            "validate --fast (dir)",
            [CLI, "validate", "--fast", directory],
            anchor="anchor: bagit.py --validate --fast (dir)",
            **fresh,
        ),
        Case(
            "anchor: bagit.py --validate --fast (dir)",
            [str(BIN / "bagit.py"), "--validate", "--fast", directory],
        ),
        Case(
            "validate (ZIP)",
            [CLI, "validate", zip_path],
            anchor="anchor: unzip -t (ZIP)",
            **fresh,
        ),
        Case("anchor: unzip -t (ZIP)", ["unzip", "-tq", zip_path]),
        Case(
            "validate (dir)",
            [CLI, "validate", directory],
            anchor="anchor: bagit.py --validate --processes 2 (dir)",
            **fresh,
        ),
        Case(
            "anchor: bagit.py --validate --processes 2 (dir)",
            [str(BIN / "bagit.py"), "--validate", "--processes", "2", directory],
        ),
        Case(
            "extract (ZIP → new folder)",
            [CLI, "extract", "-q", zip_path, str(scratch / "extracted")],
            anchor="anchor: unzip -q -d",
            cache=cold,
            clear=(cold, scratch / "extracted"),
        ),
        Case(
            "anchor: unzip -q -d",
            ["unzip", "-q", zip_path, "-d", str(scratch / "unzipped")],
            clear=(scratch / "unzipped",),
        ),
    ]
    if size in args.create_sizes:
        source = create_source(size)
        port = free_port()
        writable = scratch / "writable"
        cases += [
            Case(
                "create (new ZIP; create's files)",
                [CLI, "create", "-q", str(scratch / "created.zip"), str(source)],
                anchor="anchor: tiled register (create's files)",
                cache=cold,
                clear=(cold, scratch / "created.zip"),
            ),
            Case(
                "anchor: tiled register (create's files)",
                [str(BIN / "tiled"), "register", f"http://127.0.0.1:{port}", str(source)],
                clear=(scratch / "registered.db", writable),
                server=tiled_serve_catalog(
                    scratch / "registered.db", source, port, "--init", "-w", writable
                )
                + ["--api-key", API_KEY],
                port=port,
                env={"TILED_API_KEY": API_KEY},
            ),
        ]
    cases.append(
        Case(
            "load (ZIP → new SQLite catalog)",
            [
                CLI,
                "load",
                "-q",
                zip_path,
                str(scratch / "loaded.db"),
                "--data",
                str(scratch / "loaded"),
            ],
            anchor="anchor: tiled register (create's files)",
            cache=cold,
            clear=(cold, scratch / "loaded.db", scratch / "loaded"),
        )
    )
    if not shutil.which("unzip"):
        cases = [case for case in cases if "unzip" not in case.row]
        for case in cases:
            if case.anchor and "unzip" in case.anchor:
                case.anchor = None
    if size in args.download_sizes:
        jobs = scratch / "jobs.json"
        asset_jobs(archive.directory / "catalog.db", jobs)
        workers = str(args.workers)
        cases += [
            Case(
                "download (stock serve → new ZIP)",
                [CLI, "download", "-q", api, "-o", str(scratch / "downloaded.zip")]
                + ["--workers", workers, "--cache-dir", str(scratch / "blobs")],
                anchor=f"anchor: plain httpx GETs, {workers} threads",
                cache=cold,
                clear=(cold, scratch / "downloaded.zip", scratch / "blobs"),
            ),
            Case(
                f"anchor: plain httpx GETs, {workers} threads",
                [PYTHON, "-c", PLAIN_GETS, api, str(jobs), str(scratch / "gets"), workers],
                clear=(scratch / "gets",),
            ),
        ]
    return cases


def measure(
    launcher: Launcher, archive: Built, args: argparse.Namespace, timings: dict
) -> list[Case]:
    """Every case of ``archive``'s size, ``args.runs`` interleaved rounds."""
    scratch = OUTPUT / "scratch"
    remove(scratch)
    scratch.mkdir(parents=True)
    warm = scratch / "warm-cache"
    try:
        with stock_server(archive, scratch) as api:
            cases = cases_for(archive, api, scratch, args, warm)
            warming = next(case for case in cases if case.row.endswith("listing, warm"))
            for _ in range(2):  # kept verdicts in the warm cache root, not timed
                run(launcher, warming, scratch)
            for round_ in range(args.runs):
                for case in cases:
                    log.print(f"{archive.size:,} nodes, round {round_ + 1}/{args.runs}: {case.row}")
                    seconds, rss = run(launcher, case, scratch)
                    timing = timings.setdefault((case.row, archive.size), Timing())
                    timing.seconds.append(seconds)
                    timing.peak_rss = max(timing.peak_rss, rss)
            return cases
    finally:
        remove(scratch)


# -- Report -------------------------------------------------------------------------------------


def report(
    rows: list[tuple[str, str | None]],
    sizes: list[int],
    timings: dict,
    runs: int,
    floor: int,
    loads: list[float],
    note: str,
) -> None:
    first = sizes[0]
    table = Table(
        title=f"Scale: seconds (median of {runs} fresh processes); × first: over the"
        f" {first:,}-node figure; × anchor: over the anchor's at that size"
    )
    table.add_column("case")
    for size in sizes:
        for column in (f"{size:,} s", "× first", "× anchor"):
            table.add_column(column, justify="right")
    for row, anchor in rows:
        cells = [row]
        for size in sizes:
            timing = timings.get((row, size))
            if timing is None:
                cells += ["", "", ""]
                continue
            base = timings.get((row, first))
            against = timings.get((anchor, size)) if anchor else None
            cells += [
                f"{timing.median:.2f}",
                f"{timing.median / base.median:.2f}" if base else "",
                f"{timing.median / against.median:.2f}" if against else "",
            ]
        table.add_row(*cells, style="dim" if row.startswith("anchor") else None)
    out.print(table)

    memory = Table(
        title=f"Peak RSS, MB (the largest of the runs; a client's, not a server's;"
        f" {floor / 1e6:.0f} MB or less shows as {floor / 1e6:.0f})"
    )
    growth = Table(title="Marginal cost, ms per 1,000 nodes, from the previous size")
    memory.add_column("case")
    growth.add_column("case")
    for size in sizes:
        memory.add_column(f"{size:,}", justify="right")
    for size in sizes[1:]:
        growth.add_column(f"→ {size:,}", justify="right")
    for row, _ in rows:
        memory.add_row(
            row,
            *(
                f"{timings[(row, size)].peak_rss / 1e6:.0f}" if (row, size) in timings else ""
                for size in sizes
            ),
        )
        cells = []
        for before, after in zip(sizes, sizes[1:], strict=False):
            if (row, before) in timings and (row, after) in timings:
                extra = timings[(row, after)].median - timings[(row, before)].median
                cells.append(f"{extra / (after - before) * 1e6:.1f}")
            else:
                cells.append("")
        if any(cells):
            growth.add_row(row, *cells)
    out.print(memory)
    if len(sizes) > 1:
        out.print(growth)
    out.print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs;"
        f" {note}. tiled-archive commands in a fresh cache root but the warm cases; anchors'"
        " servers started beforehand and not counted; page cache warm. Load average (1 min)"
        f" {', '.join(f'{load:.1f}' for load in loads)} (at each size's start, and the end)."
    )


def code_version() -> str:
    """The commit whose code was measured (and whether its files differ from it)."""
    import tiled_archive

    package = Path(tiled_archive.__file__).resolve().parent
    git = ["git", "-C", str(package)]
    described = subprocess.run(
        [*git, "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return f"tiled-archive {__version__} at {described.stdout.strip() or 'unknown commit'}"


def sizes_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes_list, default=[1_000, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--download-sizes",
        type=sizes_list,
        default=[1_000, 10_000],
        help="sizes whose download is timed (default 1000,10000: 100,000 takes very long)",
    )
    parser.add_argument(
        "--create-sizes",
        type=sizes_list,
        default=[1_000],
        help="sizes whose create and tiled register are timed (default 1000)",
    )
    parser.add_argument("--workers", type=int, default=4, help="download's transfers and GETs")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached archives")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.sizes:
        parser.error("--runs must be positive and --sizes name at least one size")
    args.sizes = sorted(set(args.sizes))
    # Children write and use bytecode, as an installed package has it (benchmarks/startup.py).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if not shutil.which("unzip"):
        log.print("unzip (Info-ZIP) not found: its anchors are skipped")

    timings: dict[tuple[str, int], Timing] = {}
    rows: dict[str, str | None] = {}
    launcher = Launcher()
    loads = []
    try:
        for size in args.sizes:
            archive = built(size, args.fresh)
            loads.append(os.getloadavg()[0])
            for case in measure(launcher, archive, args, timings):
                rows.setdefault(case.row, case.anchor)
    finally:
        launcher.close()
    loads.append(os.getloadavg()[0])
    order = [row for row in rows if not row.startswith("anchor")]
    ordered: list[tuple[str, str | None]] = []
    for row in order:  # each anchor after the first case that uses it
        ordered.append((row, rows[row]))
        anchor = rows[row]
        if anchor and anchor in rows and (anchor, None) not in ordered:
            ordered.append((anchor, None))
    ordered += [(row, None) for row in rows if (row, None) not in ordered and row not in order]
    report(ordered, args.sizes, timings, args.runs, launcher.floor, loads, code_version())


if __name__ == "__main__":
    main()
