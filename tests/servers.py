"""Servers for the tests: stock `tiled serve pyobject` on loopback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiled_archive.testing import free_port, serving

TILED = str(Path(sys.executable).parent / "tiled")
REPOSITORY = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serve_pyobject(tree: str, log: Path, **environment: str) -> Iterator[str]:
    """Stock `tiled serve pyobject --public TREE` on loopback (this repository importable by
    it, ``environment`` set for it and for this process): its URL."""
    port = free_port()
    command = [TILED, "serve", "pyobject", "--public", "--port", port, tree]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPOSITORY))
        for name, value in environment.items():
            patch.setenv(name, value)
        with serving(command, port, log=log) as server:
            yield server.url


def pyobject_fixture(tree: str, **environment: str):
    """A module-scoped fixture: the URL of stock `tiled serve pyobject --public TREE` (with
    ``environment`` set for it and for this process), for the module's tests."""

    @pytest.fixture(scope="module")
    def served(tmp_path_factory) -> Iterator[str]:
        log = tmp_path_factory.mktemp("pyobject") / "server.log"
        with serve_pyobject(tree, log, **environment) as url:
            yield url

    return served
