"""Many archives in one Tiled deployment, under load: requests/s and latency at 1, 8 and 32
concurrent clients, against stock Tiled serving the same data extracted, in the same run.

    .venv/bin/python benchmarks/deployment.py [--archives 10] [--nodes 300] [--seconds 10]
                                              [--clients 1,8,32] [--workers 2] [--fresh]

Not a test: nothing is asserted. Setup (cached under ``benchmarks/output/deployment/``,
git-ignored): ``--archives`` ZIPs made by ``create`` (Tiled's registration), each of
``--nodes`` small ``.npy`` arrays (32 x 32 float64) in folders of 30 and a CSV table; each
extracted (``convert``, as ``tiled-archive extract``: a relocated directory) for the anchor.

Two servers, both up for the whole run, each ``uvicorn --factory
tiled.server.app:app_factory --workers N`` with ``TILED_CONFIG`` (stock ``tiled serve config``
runs one process; Tiled's factory is its own way to run several), on loopback:

- archives: a config mounting every ZIP in place (``tree: tiled_archive.serve:archive``);
- stock: the anchor, a config mounting every extracted catalog (``tree: catalog``, i.e.
  ``tiled.catalog:from_uri``, with the extracted ``data/`` as ``readable_storage``).

Each level of ``--clients`` runs that many concurrent clients (one ``httpx.AsyncClient``,
one connection per client) for ``--seconds`` per server, after a short warm-up, in
``--rounds`` turns alternating between the two servers (so load from elsewhere on the machine
falls on both alike). Each client loops over a seeded mix: list a folder (a page of 20), a
node's metadata, a 4 x 4 slice as JSON, an 8-row slice as octet-stream, the CSV table as JSON.
Latency is per request as the client sees it (the driver shares the machine's cores with the
servers, for both alike). Errors: answers other than 200 and failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tiled_archive.testing import HOST, free_port, serving
from tiled_archive.writer import convert, create

OUTPUT = Path(__file__).resolve().parent / "output" / "deployment"
PER_FOLDER = 30
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")
warnings.simplefilter("ignore")


def setup(work: Path, archives: int, nodes: int, fresh: bool) -> list[tuple[Path, Path]]:
    """``archives`` (ZIP, extracted directory) pairs of ``nodes`` arrays each (cached)."""
    state = {"archives": archives, "nodes": nodes, "per_folder": PER_FOLDER}
    marker = work / "setup.json"
    pairs = [(work / f"r{i:02d}.zip", work / f"r{i:02d}-extracted") for i in range(archives)]
    if not fresh and marker.is_file() and json.loads(marker.read_text()) == state:
        return pairs
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (packed, extracted) in enumerate(pairs):
        log.print(f"setup: archive {index + 1}/{archives} ({nodes} arrays and a table)")
        run = work / "src" / f"r{index:02d}" / "run"
        for item in range(nodes):
            folder = run / f"group_{item // PER_FOLDER:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            # A trailing letter: names ending in digits would be registered as one sequence.
            np.save(folder / f"item_{item % PER_FOLDER:03d}x.npy", rng.random((32, 32)))
        rows = np.arange(200)
        table = "t,value,label\n" + "".join(f"{t},{t * 0.5},s{t % 7}\n" for t in rows)
        (run / "table.csv").write_text(table)
        create(packed, [run], quiet=True)
        convert(packed, extracted)
    shutil.rmtree(work / "src")
    marker.write_text(json.dumps(state))
    return pairs


def config(work: Path, pairs: list[tuple[Path, Path]], form: str) -> Path:
    """The Tiled config mounting every archive under /runs/rNN, in place or extracted."""
    lines = ["authentication:", "  allow_anonymous_access: true", "trees:"]
    for index, (packed, extracted) in enumerate(pairs):
        lines.append(f"  - path: /runs/r{index:02d}")
        if form == "archives":
            lines += ["    tree: tiled_archive.serve:archive", f'    args: {{path: "{packed}"}}']
        else:
            lines += [
                "    tree: catalog",
                "    args:",
                f'      uri: "sqlite:///{extracted / "catalog.db"}"',
                f'      readable_storage: ["{extracted / "data"}"]',
            ]
    path = work / f"{form}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Level:
    """What one level of concurrency measured (summed over its rounds)."""

    clients: int
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    #: Latencies by kind of request.
    kinds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float, kind: str | None = None) -> float:
        values = self.latencies if kind is None else self.kinds.get(kind, [])
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


#: The kinds of request in the mix, as the table names them.
KINDS = ("listing", "metadata", "slice JSON", "slice octets", "table")


def requests_mix(archives: int, nodes: int, seed: int):
    """An endless, seeded stream of (kind, path, params, accept) in the mix described above."""
    rng = random.Random(seed)
    folders = (nodes + PER_FOLDER - 1) // PER_FOLDER
    api = "/api/v1"
    while True:
        run = f"runs/r{rng.randrange(archives):02d}/run"
        item = rng.randrange(nodes)
        node = f"{run}/group_{item // PER_FOLDER:02d}/item_{item % PER_FOLDER:03d}x"
        kind = rng.random()
        if kind < 0.25:
            folder = f"{run}/group_{rng.randrange(folders):02d}"
            params = {"page[offset]": str(rng.randrange(PER_FOLDER - 19)), "page[limit]": "20"}
            yield "listing", f"{api}/search/{folder}", params, "application/json"
        elif kind < 0.6:
            yield "metadata", f"{api}/metadata/{node}", {}, "application/json"
        elif kind < 0.75:
            row = rng.randrange(28)
            params = {"slice": f"{row}:{row + 4},0:4"}
            yield "slice JSON", f"{api}/array/full/{node}", params, "application/json"
        elif kind < 0.9:
            row = rng.randrange(24)
            params = {"slice": f"{row}:{row + 8}"}
            yield "slice octets", f"{api}/array/full/{node}", params, "application/octet-stream"
        else:
            yield "table", f"{api}/table/full/{run}/table", {}, "application/json"


async def drive(url: str, level: Level, seconds: float, args: argparse.Namespace, seed: int):
    """``level.clients`` concurrent clients looping over the mix for ``seconds``; what they
    measured is added to ``level``."""
    import httpx

    clients = level.clients
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        deadline = time.perf_counter() + seconds

        async def client(stream) -> None:
            for kind, path, params, accept in stream:
                if time.perf_counter() >= deadline:
                    return
                start = time.perf_counter()
                try:
                    response = await http.get(path, params=params, headers={"Accept": accept})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    took = time.perf_counter() - start
                    level.latencies.append(took)
                    level.kinds.setdefault(kind, []).append(took)
                else:
                    level.errors += 1

        streams = [requests_mix(args.archives, args.nodes, seed * 1000 + n) for n in range(clients)]
        started = time.perf_counter()
        await asyncio.gather(*(client(stream) for stream in streams))
        level.seconds += time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the workers), from /proc."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
        total += int(rss.split()[1])
        pids += [int(child) for child in children]
    return total / 1024


def server_command(port: int, workers: int) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "tiled.server.app:app_factory"]
    command += ["--workers", str(workers), "--host", HOST, "--port", str(port)]
    return command + ["--log-level", "warning", "--no-access-log"]


def wait_ready(url: str) -> None:
    """Until the server answers a listing (the port opens before the workers' apps exist)."""
    import httpx

    while True:
        try:
            if httpx.get(f"{url}/api/v1/search/runs", timeout=60).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


LABELS = {
    "stock": "stock Tiled, extracted (tree: catalog)",
    "archives": "archives in place (tiled_archive.serve:archive)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archives", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=300, help="arrays per archive")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and server")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="rebuild the archives")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    work = OUTPUT
    pairs = setup(work / "archives", args.archives, args.nodes, args.fresh)
    shutil.rmtree(work / "cache", ignore_errors=True)
    measured = {form: [Level(clients) for clients in levels] for form in LABELS}
    startup, rss = {}, {}
    with contextlib.ExitStack() as stack:
        urls = {}
        for form in LABELS:  # both up at once, driven in turn: load from elsewhere hits both
            port = free_port()
            env = {"TILED_CONFIG": str(config(work, pairs, form))}
            env["TILED_ARCHIVE_CACHE"] = str(work / "cache")
            started = time.perf_counter()
            server = stack.enter_context(
                serving(
                    server_command(port, args.workers),
                    port,
                    log=work / f"{form}.log",
                    env=env,
                    timeout=300,
                )  # fmt: skip
            )
            urls[form] = server.url
            wait_ready(server.url)
            startup[form] = (time.perf_counter() - started, server.process.pid)
            log.print(f"{form}: up in {startup[form][0]:.1f} s; warming up")
            asyncio.run(drive(server.url, Level(max(levels)), args.warmup, args, seed=99))
        for index, clients in enumerate(levels):
            for round_ in range(args.rounds):
                order = list(LABELS) if round_ % 2 == 0 else list(reversed(LABELS))
                for form in order:
                    log.print(f"{form}: {clients} clients, round {round_ + 1}/{args.rounds}")
                    level = measured[form][index]
                    seconds = args.seconds / args.rounds
                    asyncio.run(drive(urls[form], level, seconds, args, seed=round_))
        rss = {form: rss_mb(pid) for form, (_, pid) in startup.items()}

    zipped = sum(packed.stat().st_size for packed, _ in pairs)
    title = (
        f"{args.archives} archives x {args.nodes} arrays + a table ({zipped / 1e6:.1f} MB of "
        f"ZIPs), {args.workers} uvicorn workers each, {args.seconds:g} s per level and server"
    )
    table = Table(title=title)
    for column in ("server", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors",
                   "req/s ratio", "p99 ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column == "server" else "right")
    for form, results in measured.items():
        for level, anchor in zip(results, measured["stock"], strict=True):
            table.add_row(
                LABELS[form],
                str(level.clients),
                str(len(level.latencies) + level.errors),
                f"{level.rps:.0f}",
                f"{level.percentile(0.5):.1f}",
                f"{level.percentile(0.99):.1f}",
                str(level.errors),
                f"{level.rps / anchor.rps:.2f}x",
                f"{level.percentile(0.99) / anchor.percentile(0.99):.2f}x",
            )
    out.print(table)
    kinds = Table(title="p50 ms by kind of request, 1 client (archives / stock)")
    for column in ("server", *KINDS):
        kinds.add_column(column, justify="left" if column == "server" else "right")
    for form, results in measured.items():
        single, anchor = results[0], measured["stock"][0]
        kinds.add_row(
            LABELS[form],
            *(
                f"{single.percentile(0.5, kind):.1f} "
                f"({single.percentile(0.5, kind) / anchor.percentile(0.5, kind):.2f}x)"
                for kind in KINDS
            ),
        )
    out.print(kinds)
    for form, (seconds, _) in startup.items():
        out.print(f"{LABELS[form]}: up in {seconds:.1f} s, RSS {rss[form]:.0f} MB (all processes)")
    mean = statistics.mean(
        level.rps / anchor.rps
        for level, anchor in zip(measured["archives"], measured["stock"], strict=True)
    )
    out.print(f"mean req/s ratio, archives / stock: {mean:.2f}x (req/s: > 1 is faster; "
              "p99 and p50: < 1 is faster)")  # fmt: skip


if __name__ == "__main__":
    main()
