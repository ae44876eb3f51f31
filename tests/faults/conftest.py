"""Fixtures of the fault tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ..servers import catalog_with_writer

#: The size of each of the origin's files.
FILE_BYTES = 1 << 20


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Iterator[str]:
    """Stock `tiled serve catalog` over four 1 MiB .npy files and a small one: the API URL."""
    root = tmp_path_factory.mktemp("origin")
    files = root / "files"
    files.mkdir()
    rng = np.random.default_rng(5)
    for name in ("alpha", "beta", "gamma", "delta"):
        np.save(files / f"{name}.npy", rng.random(FILE_BYTES // 8))
    np.save(files / "small.npy", rng.random(1024))  # a lazy archive fetches it whole
    (root / "server").mkdir()
    with catalog_with_writer(root / "server", files) as (_, port):
        yield f"http://127.0.0.1:{port}/api/v1"


def fetch_work(archive: Path) -> list[str]:
    """Partial and whole files in a lazy archive's (or mirror's) work folder, its state
    databases and locks aside."""
    work = archive / ".tiled-archive-fetch"
    return sorted(
        str(Path(root, name).relative_to(work))
        for root, _, names in os.walk(work)
        for name in names
        if not name.startswith(("state.db", "mirror.db")) and not name.endswith(".lock")
    )
