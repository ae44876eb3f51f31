"""Living archives: what ``update`` moves and costs after a small change at the server, and how
long ``diff`` takes, against baselines measured in the same run on the same machine.

    .venv/bin/python benchmarks/update.py [--nodes 1000] [--mib 1] [--diff-nodes 10000] [--fresh]

Not a test: nothing is asserted. Setup (cached under ``benchmarks/output/update/``,
git-ignored): ``--nodes`` ``.npy`` files of ``--mib`` MiB each (1 GB by default) in folders
of 100, registered by Tiled's own registration and served by stock ``tiled serve catalog``
(a subprocess on loopback, through a proxy that counts bytes), and by stock ``tiled serve
config`` with the archive route mounted (``tiled_archive.serve.router:router``). Rows:

1. A fresh download of the tree into a directory archive and into a ZIP (each with an empty
   download cache): the baselines, time and bytes on the wire.
2. Then one file is rewritten at the same size and ten nodes are added (registered by Tiled
   while the server runs), and each archive is updated (``tiled-archive update``, in-process,
   again with an empty download cache: everything unchanged comes from the archive itself).
   Bytes moved against the changed bytes plus the catalog's listing (its metadata, fetched
   with plain httpx through the same proxy); time against the fresh download.
3. ``diff`` of two ``--diff-nodes``-node archives (one node's metadata and one file changed),
   in-process and as the whole command (start-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import tiled_archive
from tiled_archive.catalog.registration import build_catalog
from tiled_archive.downloader.update import update
from tiled_archive.reader import open_archive
from tiled_archive.rules.manifest import FileEntry
from tiled_archive.testing import (
    CountingProxy,
    free_port,
    list_every_container,
    serving,
    tiled_serve_catalog,
)
from tiled_archive.writer import create, reseal

MIB = 1 << 20
OUTPUT = Path(__file__).resolve().parent / "output" / "update"
out = Console(width=max(120, shutil.get_terminal_size().columns))
log = Console(stderr=True, style="dim")


def setup_tree(work: Path, nodes: int, mib: int, fresh: bool) -> Path:
    """The served tree (a fresh copy every run: the run changes it) and its catalog."""
    state = {"nodes": nodes, "mib": mib}
    pristine = work / "pristine"
    marker = pristine / "setup.json"
    if fresh or not marker.is_file() or json.loads(marker.read_text()) != state:
        shutil.rmtree(pristine, ignore_errors=True)
        log.print(f"setup: {nodes} files of {mib} MiB under {pristine}")
        tree = pristine / "source" / "tree"
        values = mib * MIB // 8 - 16  # an .npy header is 128 bytes
        for index in range(nodes):
            folder = tree / f"group_{index // 100:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"item{index % 100:02d}x.npy", np.full(values, float(index)))
        build_catalog(pristine / "catalog.db", {"tree": tree})
        marker.write_text(json.dumps(state))
    served = work / "served"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(pristine, served)
    with sqlite3.connect(served / "catalog.db") as conn:  # the copy's files, not pristine's
        conn.execute(
            "UPDATE assets SET data_uri = replace(data_uri, ?, ?)",
            (pristine.as_uri().replace("file://", ""), served.as_uri().replace("file://", "")),
        )
    return served / "catalog.db"


def setup_diff_pair(work: Path, nodes: int, fresh: bool) -> tuple[Path, Path]:
    """Two directory archives of ``nodes`` tiny ``.npy`` nodes: the second with one node's
    metadata and one file's bytes changed (re-sealed)."""
    before, after = work / "diff-before", work / "diff-after"
    marker = work / "diff.json"
    if not fresh and marker.is_file() and json.loads(marker.read_text()) == {"nodes": nodes}:
        return before, after
    log.print(f"setup: two {nodes}-node archives for diff")
    shutil.rmtree(before, ignore_errors=True)
    shutil.rmtree(after, ignore_errors=True)
    source = work / "diff-source" / "tree"
    shutil.rmtree(source.parent, ignore_errors=True)
    for index in range(nodes):
        folder = source / f"group_{index // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"item{index % 100:02d}x.npy", np.arange(8) + index)
    create(before, [source])
    shutil.copytree(before, after)
    with sqlite3.connect(after / "catalog.db") as conn:
        conn.execute(
            "UPDATE nodes SET metadata = '{\"note\": 1}' WHERE key = 'item07x' AND parent = "
            "(SELECT id FROM nodes WHERE key = 'group_0000')"
        )
    changed = next((after / "data").rglob("item42x.npy"))
    np.save(changed, np.arange(8) * 3)
    with open_archive(after) as archive:
        manifest = archive.manifest
    member, content = changed.relative_to(after).as_posix(), changed.read_bytes()
    entry = FileEntry(member, len(content), hashlib.sha256(content).hexdigest())
    files = tuple(entry if old.path == member else old for old in manifest.files)
    reseal(after, dataclasses.replace(manifest, files=files))
    marker.write_text(json.dumps({"nodes": nodes}))
    return before, after


def listing_bytes(proxy: CountingProxy) -> int:
    """Bytes of the tree's listing (every container's children with their data sources)."""
    before = proxy.received
    list_every_container(f"{proxy.url}/api/v1", "tree")
    return proxy.received - before


def change_the_server(catalog: Path) -> int:
    """One file rewritten at the same size, ten nodes added; the changed bytes."""
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.client.register import register
    from tiled.server.app import build_app

    tree = catalog.parent / "source" / "tree"
    changed = next(tree.rglob("item07x.npy"))
    size = changed.stat().st_size
    np.save(changed, -np.load(changed))
    assert changed.stat().st_size == size
    added = tree / "group_new"
    added.mkdir()
    for index in range(10):
        np.save(added / f"new{index}x.npy", np.full(MIB // 8 - 16, -float(index)))
    adapter = from_uri(f"sqlite:///{catalog}", readable_storage=[str(catalog.parent / "source")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(adapter)) as context:
            asyncio.run(register(from_context(context), added, prefix="/tree/group_new"))
    return size + sum(f.stat().st_size for f in added.iterdir())


def timed(step):
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=1)
    parser.add_argument("--diff-nodes", type=int, default=10_000)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    catalog = setup_tree(OUTPUT, args.nodes, args.mib, args.fresh)
    pair = setup_diff_pair(OUTPUT, args.diff_nodes, args.fresh)
    work = OUTPUT / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []
    stock_port, routed_port = free_port(), free_port()
    source = catalog.parent / "source"
    config = catalog.parent / "config.yml"
    config.write_text(
        "authentication:\n  allow_anonymous_access: true\n"
        f"trees:\n  - path: /\n    tree: catalog\n    args:\n      uri: sqlite:///{catalog}\n"
        f"      readable_storage: [{source}]\n"
        "routers:\n  - tiled_archive.serve.router:router\n"
    )
    tiled = Path(sys.executable).parent / "tiled"
    with (
        serving(tiled_serve_catalog(catalog, source, stock_port, "--public"), stock_port),
        serving([tiled, "serve", "config", config, "--port", routed_port], routed_port),
        CountingProxy(stock_port) as stock,
        CountingProxy(routed_port) as routed,
    ):
        from tiled.client import from_uri

        servers = {"stock Tiled": stock, "Tiled with the archive route": routed}
        fresh: dict[str, tuple[float, int]] = {}
        for server, proxy in servers.items():
            for name in ("tree", "tree.zip"):
                before = proxy.received
                target = work / server.split()[-1] / name
                seconds, _ = timed(
                    lambda target=target, proxy=proxy: tiled_archive.download(
                        from_uri(f"{proxy.url}/api/v1")["tree"],
                        target,
                        cache_dir=target.parent / f"{target.name}.cache",
                    )
                )
                fresh[str(target)] = (seconds, proxy.received - before)
                rows.append((f"{server}: fresh download into {name} (baseline)",
                             f"{seconds:.2f} s", f"{fresh[str(target)][1] / MIB:.0f} MiB",
                             "1.00", ""))  # fmt: skip
        changed = change_the_server(catalog)
        listing = listing_bytes(stock)
        bound = changed + listing
        rows.append(("changed bytes + the listing's", "", f"{bound / MIB:.2f} MiB", "", ""))
        for server, proxy in servers.items():
            for name in ("tree", "tree.zip"):
                before = proxy.received
                target = work / server.split()[-1] / name
                seconds, result = timed(
                    lambda target=target: update(
                        target, cache_dir=target.parent / f"{target.name}.new"
                    )
                )
                moved = proxy.received - before
                rows.append(
                    (f"{server}: update of {name}: {result.differences.summary()}",
                     f"{seconds:.2f} s", f"{moved / MIB:.2f} MiB",
                     f"{seconds / fresh[str(target)][0]:.3f} × fresh",
                     f"{moved / bound:.3f} × bound")
                )  # fmt: skip
        command = [sys.executable, "-m", "tiled_archive.cli", "update", "-q"]
        for server in servers:
            target = work / server.split()[-1] / "tree"
            seconds, _ = timed(
                lambda target=target: subprocess.run(
                    [*command, str(target)], check=True, capture_output=True
                )
            )
            rows.append((f"{server}: tiled-archive update, nothing changed (whole command)",
                         f"{seconds:.2f} s", "", f"{seconds / fresh[str(target)][0]:.3f} × fresh",
                         ""))  # fmt: skip
    seconds, found = timed(lambda: tiled_archive.diff(*pair))
    rows.append((f"diff of two {args.diff_nodes}-node archives ({found.summary()})",
                 f"{seconds:.2f} s", "", "", ""))  # fmt: skip
    command = [sys.executable, "-m", "tiled_archive.cli", "diff", *map(str, pair)]
    seconds, _ = timed(lambda: subprocess.run(command, capture_output=True, env=os.environ))
    rows.append(("tiled-archive diff (whole command)", f"{seconds:.2f} s", "", "", ""))
    table = Table(title=f"update ({args.nodes} nodes of {args.mib} MiB) and diff")
    for column in ("case", "time", "bytes moved", "time ratio", "bytes ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
