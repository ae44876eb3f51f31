"""`tiled-archive info`: what an archive holds, as a user runs it (through `main(argv)`, piped, and
under a pseudo-terminal), checked against what Tiled's own client serves from the archive."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tiled_archive
from tiled_archive.rules.names import FORMAT_VERSION
from tiled_archive.writer import convert, create, reseal

from ..conftest import FIXTURES, cli
from ..terminal import under_a_terminal

MANY = 25  # children of one folder: more than info shows by default
LETTERS = "abcdefghijklmnopqrstuvwxy"  # names without numbers: Tiled groups numbered files


@pytest.fixture(scope="module")
def archives(sample_tree, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("info")
    sources = root / "sources"
    shutil.copytree(sample_tree, sources / "scan")
    (sources / "many").mkdir()
    for i in range(MANY):
        np.save(sources / "many" / f"item_{LETTERS[i]}.npy", np.full(3, i))
    create(root / "archive", [sources / "scan", sources / "many"], quiet=True)
    convert(root / "archive", root / "archive.zip", quiet=True)
    return {"directory": root / "archive", "zip": root / "archive.zip"}


def tiled_nodes(client, prefix: str = "") -> dict[str, tuple[str, list | None]]:
    """Every node Tiled serves below ``client``, as the catalog holds them (an HDF5 file's
    inner groups and datasets come from its adapter, not from catalog rows: not walked)."""
    found = {}
    for key, child in client.items():
        path = f"{prefix}{key}"
        family = child.structure_family
        shape = getattr(child.structure(), "shape", None) if family != "container" else None
        found[path] = (family, None if shape is None else list(shape))
        sources = child.data_sources() or []
        if family == "container" and not any(s.mimetype == "application/x-hdf5" for s in sources):
            found.update(tiled_nodes(child, f"{path}/"))
    return found


@pytest.mark.parametrize("form", ["directory", "zip"])
def test_json_lists_what_tiled_serves(archives, form):
    result = cli("info", "--json", archives[form])
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["form"] == form and described["format_version"] == FORMAT_VERSION
    with tiled_archive.open(archives[form], include_data_sources=True) as client:
        served = tiled_nodes(client)
        backed_by = {  # each node's files, in archive form as the archive's catalog holds them
            path: [
                asset.data_uri + ("/" if asset.is_directory else "")
                for source in client[path].data_sources() or []
                for asset in source.assets
            ]
            for path in served
        }
    listed = {n["path"]: (n["family"], n.get("shape")) for n in described["nodes"]}
    assert listed == served
    assert {n["path"]: n["assets"] for n in described["nodes"]} == backed_by
    assert backed_by["scan/v3array"] == ["data/scan/v3array.zarr/"]  # a folder of files
    manifest = json.loads((archives["directory"] / "tiled-archive.json").read_text())
    payload = sum(entry["size"] for entry in manifest["files"])
    assert described["payload"] == {
        "files": len(manifest["files"]),
        "bytes": payload,
        "absent_files": 0,
        "absent_bytes": 0,
    }
    assert sum(n["bytes"] for n in described["nodes"]) == payload  # every file in one node
    assert described["catalog"] == manifest["catalog"]
    if form == "zip":
        assert described["archive_bytes"] == archives["zip"].stat().st_size
    item = next(n for n in described["nodes"] if n["path"] == "many/item_h")
    assert item["dtype"] == np.dtype(int).newbyteorder("<").str
    assert item["mimetype"] == "application/x-npy" and item["files"] == 1


def test_the_tree_is_cut_at_twenty_children_unless_all(archives):
    shown = cli("info", archives["zip"])
    assert shown.returncode == 0, shown.stderr
    assert "item_t" in shown.stdout and "item_u" not in shown.stdout
    assert f"… and {MANY - 20} more (--all lists them)" in shown.stdout
    assert "CRC-32 of every member" in shown.stdout
    every = cli("info", "--all", archives["zip"])
    assert "item_y" in every.stdout and "more (--all" not in every.stdout
    # Piped: one line per fact, the validate command to copy on one line.
    assert f"tiled-archive validate {archives['zip']}" in shown.stdout.splitlines()[-1]


def test_each_node_names_the_files_that_back_it(archives):
    """The first of its assets' archive paths (a folder's ends in ``/``), and how many more."""
    shown = cli("info", archives["directory"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    (single,) = [line for line in lines if "── single " in line]
    assert single.endswith("  data/scan/nested/single.tiff")
    (frames,) = [line for line in lines if "── frame_ " in line]
    assert frames.endswith("  data/scan/frames/frame_000.tif and 3 more")
    (store,) = [line for line in lines if "── v2array " in line]
    assert store.endswith("  data/scan/v2array.zarr/")


def test_at_a_terminal(archives):
    status, shown = under_a_terminal("info", archives["directory"], columns=100)
    assert status == 0
    assert "format" in shown and f"tiled-archive {FORMAT_VERSION}" in shown and "└──" in shown
    assert "Traceback" not in shown


def test_hostile_catalog_text_is_shown_escaped_and_cycles_are_not_followed(tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(FIXTURES / "valid" / "minimal" / "archive", archive)
    with sqlite3.connect(archive / "catalog.db") as conn:
        conn.execute(
            "UPDATE nodes SET key = ? WHERE key = 'array'", ("\x1b]0;pwned\x07[bold red]x",)
        )
        conn.execute(
            "INSERT INTO nodes (id, parent, key, structure_family, metadata, specs)"
            " VALUES (900, 901, 'a', 'container', '{}', '[]'),"
            " (901, 900, 'b', 'container', '{}', '[]')"
        )
    conn.close()
    reseal(archive)
    result = cli("info", archive)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\\x1b]0;pwned\\x07[bold red]x" in result.stdout
    assert "2 nodes not below the root" in result.stdout
    described = json.loads(cli("info", "--json", archive).stdout)
    assert described["unreachable_nodes"] == 2
    assert "\x1b]0;pwned\x07[bold red]x/" not in {n["path"] for n in described["nodes"]}


def test_warnings_are_listed_once_and_errors_are_coded(tmp_path):
    unaligned = cli("info", FIXTURES / "warning" / "W102-unaligned-member" / "archive.zip")
    assert unaligned.returncode == 0
    assert unaligned.stdout.count("warning TA-W102") == 1 and not unaligned.stderr
    missing = cli("info", tmp_path / "nothing.zip")
    assert missing.returncode == 1 and "TA-E001" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout
