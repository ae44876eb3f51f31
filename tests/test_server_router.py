"""Streamed archives: stock ``tiled serve config`` with ``routers: [tiled_archive.server:router]``.

The catalog holds registered files (every format of the sample tree, loaded by ``load``) and
data a client wrote through the server (arrays, tables). ``GET /api/v1/archive/{path}`` must
give a ZIP that validates (TA-W103 aside: its tag files come last) and holds the same files,
byte for byte, as ``download`` of the same node writes.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.load import load
from tiled_archive.testing import free_port, serving
from tiled_archive.validator import validate
from tiled_archive.writer import create

from .test_remote import values

KEY = "routertestkey0123"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sample_tree):
    root = tmp_path_factory.mktemp("router")
    create(root / "files-archive", [sample_tree], quiet=True)
    catalog = root / "catalog.db"
    load(root / "files-archive", f"sqlite:///{catalog}", root / "registered", at="files")
    (root / "written").mkdir()
    config = root / "config.yml"
    config.write_text(
        f"""\
authentication:
  single_user_api_key: {KEY}
trees:
  - path: /
    tree: catalog
    args:
      uri: sqlite:///{catalog}
      writable_storage: {root / "written"}
      readable_storage: [{root / "registered"}]
routers:
  - tiled_archive.server:router
"""
    )
    port = free_port()
    tiled = Path(sys.executable).parent / "tiled"
    with serving(
        [tiled, "serve", "config", config, "--port", port], port, log=root / "serve.log"
    ) as server:
        from tiled.client import from_uri

        client = from_uri(server.url, api_key=KEY)
        written = client.create_container("written", metadata={"kind": "client"})
        for index in range(3):
            run = written.create_container(f"run{index}", metadata={"sample": f"S{index}"})
            run.write_array(np.arange(200.0).reshape(20, 10) * index, key="image")
            run.write_table(pd.DataFrame({"t": np.arange(5), "v": np.arange(5) * 1.5}), key="t")
        yield {"url": server.url, "client": client, "root": root}


def fetch(deployment, path: str, dest: Path, **params: str) -> httpx.Response:
    url = f"{deployment['url']}/api/v1/archive/{path}"
    with httpx.stream("GET", url, params={"api_key": KEY, **params}, timeout=120) as response:
        if response.status_code == 200:
            with open(dest, "wb") as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        else:
            response.read()
    return response


def payload_digests(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zipped:
        return sorted(
            hashlib.sha256(zipped.read(name)).hexdigest()
            for name in zipped.namelist()
            if name.startswith("data/") and not name.endswith("/")
        )


@pytest.mark.parametrize("node", ["files", "written"])
def test_a_streamed_archive_validates_and_holds_what_download_writes(deployment, node, tmp_path):
    streamed = tmp_path / f"{node}.zip"
    response = fetch(deployment, node, streamed)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith(f'attachment; filename="{node}.zip"')
    report = validate(streamed)
    assert report.valid and report.codes == {"TA-W103"}, report.problems
    downloaded = tiled_archive.download(deployment["client"][node], tmp_path / "downloaded.zip")
    assert payload_digests(streamed) == payload_digests(downloaded)
    with tiled_archive.open(streamed) as mine, tiled_archive.open(downloaded) as theirs:
        assert values(mine) == values(theirs)
        assert list(mine) == [node]


def test_search_parameters_narrow_the_children(deployment, tmp_path):
    streamed = tmp_path / "one.zip"
    query = {"filter[eq][condition][key]": "sample", "filter[eq][condition][value]": '"S1"'}
    response = fetch(deployment, "written", streamed, **query)
    assert response.status_code == 200, response.text
    with tiled_archive.open(streamed) as archive:
        assert list(archive["written"]) == ["run1"]
        assert archive["written"]["run1"]["image"].read()[3, 4] == 34.0


def test_the_deployments_authentication_applies(deployment, tmp_path):
    url = f"{deployment['url']}/api/v1/archive/written"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, params={"api_key": "wrong"}, timeout=30).status_code == 401
    missing = fetch(deployment, "no/such/node", tmp_path / "x.zip")
    assert missing.status_code == 404 and not (tmp_path / "x.zip").exists()
