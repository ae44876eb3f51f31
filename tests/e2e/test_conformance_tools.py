"""The conformance suite's independent producer in a process of its own (standard library only,
`python -S -I`): the archives it writes validate, and Tiled reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiled_archive.reader import open_archive
from tiled_archive.validator import validate

from ..integration.test_conformance import PRODUCER


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("producer")
    archives = {"zip": out / "independent.zip", "directory": out / "independent"}
    for path in archives.values():
        # -S -I: no site-packages, no user paths: only the standard library can be imported.
        result = subprocess.run(
            [sys.executable, "-S", "-I", str(PRODUCER), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    return archives


@pytest.mark.parametrize("form", ["zip", "directory"])
def test_independent_archive_validates_and_opens(produced, form):
    report = validate(produced[form])
    assert report.problems == [], [str(p) for p in report.problems]
    with open_archive(produced[form]) as archive:
        assert archive.payload() == ["data/points.csv", "data/ramp.npy"]
        assert archive.read("data/points.csv") == b"x,y\n1,0.5\n2,1.5\n3,2.5\n"
        with archive.open("data/ramp.npy") as handle:
            assert np.array_equal(np.load(handle), np.arange(12.0).reshape(4, 3))


def test_tiled_reads_the_independent_archive(produced):
    import tiled_archive

    with tiled_archive.open(produced["zip"]) as client:
        assert sorted(client) == ["points", "ramp"]
        assert np.array_equal(client["ramp"][:], np.arange(12.0).reshape(4, 3))
        table = client["points"].read()
        assert list(table.columns) == ["x", "y"] and list(table["y"]) == [0.5, 1.5, 2.5]
