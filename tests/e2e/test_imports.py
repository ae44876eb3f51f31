"""What each entry point imports, in a fresh interpreter: the fixed cost a user pays on every
command (README, "Fixed costs"). Checking an archive needs neither Tiled's server stack nor the
libraries of formats the archive does not hold; opening one needs Tiled's app but still only
the libraries of its own formats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiled_archive.writer import convert, create

#: Modules of Tiled's server stack and of data formats, none of which an archive of one .npy
#: needs to be checked.
SERVER_STACK = ("tiled.catalog", "tiled.server", "tiled.mimetypes", "fastapi", "dask", "pandas")
FORMAT_LIBRARIES = ("h5py", "zarr", "tifffile", "pyarrow.parquet", "duckdb")
#: What a valid archive's check, printed to a pipe, has no use for: the command-line framework,
#: rich (nothing to tabulate or draw), jsonschema (the manifest passed the compiled schema).
FRAMEWORK = ("typer", "click", "rich", "jsonschema")
#: What a fast check of a directory has no use for: a pool of hashing threads, ZIP reading,
#: a temporary folder for a ZIP's catalog.
DIRECTORY_FAST_CHECK_UNUSED = ("concurrent.futures", "zipfile", "tempfile")

_REPORT = (
    "import json, sys\n"
    "try:\n"
    "    exec(sys.argv[1])\n"
    "except SystemExit as stop:\n"
    "    assert stop.code in (0, None), stop.code\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def imported_by(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (argv: ``args``)."""
    done = subprocess.run(
        [sys.executable, "-c", _REPORT, code, *args], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def cli(*args: str) -> str:
    return (
        "import sys; from tiled_archive.cli import main; "
        f"sys.argv = ['tiled-archive', {', '.join(map(repr, args))}]; main()"
    )


@pytest.fixture(scope="module")
def npy_archives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imports")
    np.save(root / "tiny.npy", np.arange(10))
    create(root / "archive", [root / "tiny.npy"], quiet=True)
    convert(root / "archive", root / "archive.zip", quiet=True)
    return {"directory": root / "archive", "zip": root / "archive.zip"}


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


@pytest.mark.parametrize("form", ["directory", "zip"])
@pytest.mark.parametrize("command", [["validate"], ["validate", "--fast"], ["info"]])
def test_checking_an_archive_imports_no_server_stack(npy_archives, form, command):
    modules = imported_by(cli(*command, str(npy_archives[form])))
    assert loaded(modules, SERVER_STACK + FORMAT_LIBRARIES) == []
    assert ("numpy" in modules) == (command == ["validate"])  # the .npy header is read
    if command[0] == "validate":
        assert loaded(modules, FRAMEWORK) == []
    if command == ["validate", "--fast"]:  # Typer imports pydantic; Tiled's structures do too
        assert "pydantic" not in modules
    if command == ["validate", "--fast"] and form == "directory":
        # Nothing to hash, no ZIP to read, no catalog to copy out of one: ~15 ms of a 0.1 s check.
        assert loaded(modules, DIRECTORY_FAST_CHECK_UNUSED) == []


def test_a_check_with_problems_to_show_loads_rich_and_jsonschema(npy_archives, tmp_path):
    """The other side of the last test's FRAMEWORK check, so that it can fail: a manifest the
    schema rejects is explained by jsonschema, and its problems drawn by rich."""
    broken = tmp_path / "broken"
    shutil.copytree(npy_archives["directory"], broken)
    manifest = broken / "tiled-archive.json"
    manifest.write_text(manifest.read_text().replace('"format": "tiled-archive"', '"format": 1'))
    done = subprocess.run(
        [sys.executable, "-c", _REPORT.replace("(0, None)", "(1,)"), cli("validate", str(broken))],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "TA-E301" in done.stdout
    assert loaded(modules, FRAMEWORK) == ["rich", "jsonschema"]


@pytest.mark.slow  # a long process-level check: make test-slow
@pytest.mark.parametrize("form", ["directory", "zip"])
def test_opening_an_archive_imports_only_its_formats_libraries(npy_archives, form):
    code = (
        "import tiled_archive; c = tiled_archive.open(sys.argv[2]);"
        " assert c['tiny'].read().tolist() == list(range(10)); c.close()"
    )
    modules = imported_by(code, str(npy_archives[form]))
    tileds_own = imported_by("import tiled.server.app")  # Tiled's app imports pyarrow.parquet
    assert "tiled.server.app" in modules
    assert loaded(modules - tileds_own, FORMAT_LIBRARIES) == []
    assert loaded(tileds_own, ("h5py", "zarr", "tifffile")) == []  # so the check can fail
