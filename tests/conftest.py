"""Shared fixtures: real data files written by their own libraries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

from tiled_archive.testing import postgres_admin

# No per-example deadline: speed is measured in benchmarks/, and a loaded CI machine made a
# 200 ms deadline fail a correct round trip (the first example pays for compiling the schema).
settings.register_profile("tiled-archive", deadline=None)
settings.load_profile("tiled-archive")

warnings.filterwarnings("ignore", message=".*httpx2.*")

#: The marker of each folder of tests (pyproject.toml lists the markers).
_TIERS = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "faults": "e2e",  # processes killed at named points: the e2e tier
    "hostile": "hostile",
    "fuzz": "fuzz",
}


#: Folders in the order their tests start: the longest first, so that on several workers
#: (pytest-xdist, a file at a time) the quick ones fill the end rather than one long file.
_ORDER = ("hostile", "e2e", "faults", "fuzz", "integration", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, ``slow`` the hostile corpus's tests in processes of their
    own (``test_slow_*``), ``postgres`` those that take the PostgreSQL server; order the
    folders longest first."""
    here = Path(__file__).parent

    def folder_rank(item: pytest.Item) -> int:
        folder = item.path.relative_to(here).parts[0]
        return _ORDER.index(folder) if folder in _ORDER else len(_ORDER)

    items.sort(key=folder_rank)  # stable: the order within a folder stays
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in _TIERS:
            item.add_marker(_TIERS[folder])
        if folder == "hostile" and item.name.startswith("test_slow_"):
            item.add_marker("slow")
        if any(name.startswith("postgres") for name in getattr(item, "fixturenames", ())):
            item.add_marker("postgres")


def cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``tiled-archive ARGS`` run in this process through ``main(argv)``, its output captured as
    a pipe would take it, its exit status kept: the same result as the command in a process
    of its own, without a new interpreter importing Tiled. (tests/e2e/test_cli_process.py runs
    the real entry point: terminals, signals, the fresh interpreter's own output.)"""
    import contextlib
    import io

    from tiled_archive.cli import main, output

    stdout, stderr = io.StringIO(), io.StringIO()
    shown = warnings.showwarning
    output.err_console.cache_clear()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(stdout))
        stack.enter_context(contextlib.redirect_stderr(stderr))
        if cwd is not None:
            stack.callback(os.chdir, os.getcwd())
            os.chdir(cwd)
        try:
            main([os.fspath(arg) for arg in args])
            status = 0
        except SystemExit as exit:
            if isinstance(exit.code, str):
                stderr.write(exit.code + "\n")
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        finally:
            warnings.showwarning = shown
            output.err_console.cache_clear()
    command = ["tiled-archive", *map(os.fspath, args)]
    return subprocess.CompletedProcess(command, status, stdout.getvalue(), stderr.getvalue())


def write_sample_tree(root: Path) -> Path:
    """One folder holding every format the writer must round-trip, as their libraries write them."""
    import h5py
    import pandas as pd
    import tifffile
    import zarr

    scan = root / "scan"
    (scan / "frames").mkdir(parents=True)
    (scan / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with h5py.File(scan / "primary.h5", "w") as f:
        f.attrs["sample"] = "Si (111) — ünïcode"
        f.create_dataset("intensity", data=rng.integers(0, 1000, (20, 16, 16), dtype="uint16"))
        f["group/energy"] = np.linspace(8, 9, 20)
    for i in range(4):
        tifffile.imwrite(scan / "frames" / f"frame_{i:03d}.tif", np.full((8, 8), i, "uint8"))
    tifffile.imwrite(scan / "nested" / "single.tiff", rng.integers(0, 9, (6, 5), dtype="int16"))
    np.save(scan / "nested" / "deeper" / "table_values.npy", np.arange(24.0).reshape(4, 6))
    frame = pd.DataFrame({"x": np.arange(5), "y": np.arange(5) * 1.5, "label": list("abcde")})
    frame.to_csv(scan / "baseline.csv", index=False)
    frame.to_parquet(scan / "summary.parquet")
    z2 = zarr.open_array(
        scan / "v2array.zarr", mode="w", shape=(10, 10), chunks=(5, 5), dtype="f8", zarr_format=2
    )
    z2[:] = np.arange(100.0).reshape(10, 10)
    z3 = zarr.open_array(
        scan / "v3array.zarr", mode="w", shape=(6, 4), chunks=(3, 2), dtype="i4", zarr_format=3
    )
    z3[:] = np.arange(24).reshape(6, 4)
    return scan


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder ``build`` fills once for the whole run, however many pytest-xdist workers ask
    for it: the first takes a lock and builds, the others wait and reuse it (the run's base
    temporary folder is shared by its workers)."""
    import fcntl
    import shutil

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / f"built-{name}"
    with open(root / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(autouse=True)
def _own_download_cache(tmp_path_factory, monkeypatch):
    """Each test its own download cache (TILED_ARCHIVE_CACHE): what one test fetched never
    makes another's byte counts, nor the user's cache, hold."""
    monkeypatch.setenv("TILED_ARCHIVE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "sources", write_sample_tree) / "scan"


#: The conformance suite's fixture archives.
FIXTURES = Path(__file__).resolve().parent.parent / "conformance" / "fixtures"

#: What a third party reads: the published report schema, not the package's (they must agree).
PUBLISHED_REPORT_SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "spec" / "report.schema.json").read_text()
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (hidden files included)."""
    return {
        p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- PostgreSQL (a real server: .ci/postgres starts one and prints its URI) -------------------

#: This session's template catalog (its own name: sessions may run side by side on a server).
_TEMPLATE = f"tiled_archive_template_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_server():
    """The URI (no database) of the PostgreSQL server in TILED_ARCHIVE_TEST_POSTGRES, holding
    a template database that Tiled's own `tiled catalog init` made. Skipped when no server is
    configured, unless TILED_ARCHIVE_REQUIRE_POSTGRES is set (CI), where that is a failure."""
    import subprocess
    import sys

    server = os.environ.get("TILED_ARCHIVE_TEST_POSTGRES", "").rstrip("/")
    if not server:
        reason = "no PostgreSQL server: set TILED_ARCHIVE_TEST_POSTGRES (see .ci/postgres)"
        if os.environ.get("TILED_ARCHIVE_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    postgres_admin(
        server, f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)", f"CREATE DATABASE {_TEMPLATE}"
    )
    tiled = Path(sys.executable).parent / "tiled"
    subprocess.run([tiled, "catalog", "init", f"{server}/{_TEMPLATE}"], check=True)
    yield server
    postgres_admin(server, f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")


@pytest.fixture
def postgres_database(postgres_server):
    """A fresh, empty PostgreSQL database (no catalog in it yet): its URI."""
    yield from _database(postgres_server, "")


@pytest.fixture
def postgres_catalog(postgres_server):
    """A fresh PostgreSQL database holding a new Tiled catalog (a copy of the template Tiled
    initialized): its URI."""
    yield from _database(postgres_server, f" TEMPLATE {_TEMPLATE}")


def _database(server: str, options: str):
    import uuid

    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_admin(server, f"CREATE DATABASE {name}{options}")
    try:
        yield f"{server}/{name}"
    finally:
        postgres_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- Archives shared by the whole session (read, never changed) -------------------------------


@pytest.fixture(scope="session")
def sample_archives(sample_tree, tmp_path_factory) -> dict[str, Path]:
    """The sample tree archived every way, once a run: ``dir`` (create), ``zip`` (that
    directory packed), ``extracted`` (that ZIP extracted: relocated), ``direct`` (create
    straight to a ZIP). Tests read them; one that changes an archive copies it first."""
    from tiled_archive.writer import convert, create

    def build(out: Path) -> None:
        convert(
            convert(create(out / "dir-archive", [sample_tree]), out / "packed.zip"),
            out / "extracted",
        )
        create(out / "direct.zip", [sample_tree])

    out = built_once(tmp_path_factory, "sample-archives", build)
    return {
        "dir": out / "dir-archive",
        "zip": out / "packed.zip",
        "extracted": out / "extracted",
        "direct": out / "direct.zip",
    }


@pytest.fixture(scope="session")
def family_archives(sample_tree, tmp_path_factory) -> dict[str, Path]:
    """Archives of every structure family, once a run: files Tiled registers (NPY, TIFF
    sequence, CSV, Parquet, Zarr) as a directory, and what stock `tiled serve pyobject` holds in
    memory (arrays of every dtype, sparse, awkward, ragged, table), downloaded, as a ZIP."""

    def build(root: Path) -> None:
        from tiled.client import from_uri

        import tiled_archive
        from tiled_archive.writer import create

        from .servers import serve_pyobject

        create(root / "files", [sample_tree], quiet=True)
        with serve_pyobject("tests.trees:in_memory", root / "server.log") as url:
            tiled_archive.download(from_uri(url), root / "memory.zip", cache_dir=root / "cache")

    root = built_once(tmp_path_factory, "family-archives", build)
    return {"files": root / "files", "memory": root / "memory.zip"}


def catalog_uri(backend: str, tmp_path: Path, request: Any) -> str:
    """A catalog URI for ``backend``: a SQLite file in ``tmp_path``, or a fresh PostgreSQL
    database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_catalog")
