"""Shared fixtures: real data files written by their own libraries."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from tiled_archive.testing import postgres_admin

# No per-example deadline: speed is measured in benchmarks/, and a loaded CI machine made a
# 200 ms deadline fail a correct round trip (the first example pays for compiling the schema).
settings.register_profile("tiled-archive", deadline=None)
settings.load_profile("tiled-archive")

warnings.filterwarnings("ignore", message=".*httpx2.*")


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


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    return write_sample_tree(tmp_path_factory.mktemp("sources"))


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
