"""Streamed archives: stock ``tiled serve config`` with
``routers: [tiled_archive.serve.router:router]``.

The catalog holds registered files (every format of the sample tree, loaded by ``load``) and
data a client wrote through the server (arrays, tables). ``GET /api/v1/archive/{path}`` must
give a ZIP that validates (TA-W103 aside: its tag files come last) and holds the same files,
byte for byte, as ``download`` of the same node writes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.testing import free_port, serving
from tiled_archive.validator import validate
from tiled_archive.writer import create
from tiled_archive.writer.load import load

from .test_remote import values

KEY = "routertestkey0123"

#: The deployment's access policy, as a facility would write one: below the client's container,
#: nodes whose metadata says "secret" do not exist for anyone (not listed, not found by path),
#: and their data is refused should one be reached.
POLICY = """
from tiled.access_control.access_policies import ALL_SCOPES, DummyAccessPolicy
from tiled.queries import NotEq


class HidesSecrets(DummyAccessPolicy):
    async def allowed_scopes(self, node, principal, authn_access_tags, authn_scopes):
        metadata = node.metadata() if callable(getattr(node, "metadata", None)) else {}
        if (metadata or {}).get("secret"):
            return set(ALL_SCOPES) - {"read:data"}
        return ALL_SCOPES

    async def filters(self, node, principal, authn_access_tags, authn_scopes, scopes):
        metadata = node.metadata() if callable(getattr(node, "metadata", None)) else {}
        if (metadata or {}).get("kind") == "client":
            return [NotEq("secret", True)]
        return []
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sample_tree):
    root = tmp_path_factory.mktemp("router")
    create(root / "files-archive", [sample_tree], quiet=True)
    catalog = root / "catalog.db"
    load(root / "files-archive", f"sqlite:///{catalog}", root / "registered", at="files")
    (root / "written").mkdir()
    (root / "policies.py").write_text(POLICY)
    config = root / "config.yml"
    config.write_text(
        f"""\
authentication:
  single_user_api_key: {KEY}
access_control:
  access_policy: policies:HidesSecrets
  args: {{}}
trees:
  - path: /
    tree: catalog
    args:
      uri: sqlite:///{catalog}
      writable_storage: {root / "written"}
      readable_storage: [{root / "registered"}]
routers:
  - tiled_archive.serve.router:router
"""
    )
    port = free_port()
    tiled = Path(sys.executable).parent / "tiled"
    with serving(
        [tiled, "serve", "config", config, "--port", port],
        port,
        log=root / "serve.log",
        # The policy's folder, before the package under test's (when PYTHONPATH names it).
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.getenv("PYTHONPATH")]))},
    ) as server:
        from tiled.client import from_uri

        client = from_uri(server.url, api_key=KEY)
        written = client.create_container("written", metadata={"kind": "client"})
        for index in range(4):
            metadata = {"sample": f"S{index}", "secret": False}
            run = written.create_container(f"run{index}", metadata=metadata)
            run.write_array(np.arange(200.0).reshape(20, 10) * index, key="image")
            run.write_table(pd.DataFrame({"t": np.arange(5), "v": np.arange(5) * 1.5}), key="t")
        run.update_metadata({**metadata, "secret": True})  # run3: hidden from now on
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


def test_the_roots_archive_is_named_after_the_server(deployment, tmp_path):
    """The root has no key to name its archive by: the host and port the server was asked at
    name it (``archive.zip`` named every server's root the same)."""
    streamed = tmp_path / "root.zip"
    response = fetch(deployment, "", streamed)
    assert response.status_code == 200, response.text
    host, port = httpx.URL(deployment["url"]).host, httpx.URL(deployment["url"]).port
    name = f"{host}-{port}.zip"
    assert response.headers["content-disposition"] == (
        f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    )
    with tiled_archive.open(streamed) as archive:
        assert sorted(archive) == ["files", "written"]


def test_search_parameters_narrow_the_children(deployment, tmp_path):
    streamed = tmp_path / "one.zip"
    query = {"filter[eq][condition][key]": "sample", "filter[eq][condition][value]": '"S1"'}
    response = fetch(deployment, "written", streamed, **query)
    assert response.status_code == 200, response.text
    with tiled_archive.open(streamed) as archive:
        assert list(archive["written"]) == ["run1"]
        assert archive["written"]["run1"]["image"].read()[3, 4] == 34.0


def test_only_what_the_caller_may_read_is_streamed(deployment, tmp_path):
    """run3 is secret under the deployment's policy: not in the archive of its parent, and
    its own archive refused as Tiled refuses its data."""
    streamed = tmp_path / "written.zip"
    assert fetch(deployment, "written", streamed).status_code == 200
    with tiled_archive.open(streamed) as archive:
        assert sorted(archive["written"]) == ["run0", "run1", "run2"]
    with zipfile.ZipFile(streamed) as zipped:
        catalog = zipped.read("catalog.db")
    assert b"run3" not in catalog and b"S3" not in catalog
    refused = fetch(deployment, "written/run3", tmp_path / "secret.zip")
    assert refused.status_code in (403, 404) and not (tmp_path / "secret.zip").exists()
    raw = httpx.get(
        f"{deployment['url']}/api/v1/array/full/written/run3/image", params={"api_key": KEY}
    )
    assert raw.status_code == refused.status_code  # as Tiled's own data route answers


def test_the_deployments_authentication_applies(deployment, tmp_path):
    url = f"{deployment['url']}/api/v1/archive/written"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, params={"api_key": "wrong"}, timeout=30).status_code == 401
    missing = fetch(deployment, "no/such/node", tmp_path / "x.zip")
    assert missing.status_code == 404 and not (tmp_path / "x.zip").exists()


def test_download_takes_the_archive_route_in_one_request(deployment, tmp_path):
    """With the route, download() is one archive request (no raw-asset requests); without
    it (streamed=False) the per-asset path; both give the same files and values."""
    node = deployment["client"]["files"]
    client = node.context.http_client
    seen: list[str] = []
    client.event_hooks["request"].append(lambda request: seen.append(request.url.path))
    try:
        via_route = tiled_archive.download(node, tmp_path / "route.zip")
        route_requests = list(seen)
        seen.clear()
        per_asset = tiled_archive.download(node, tmp_path / "assets.zip", streamed=False)
    finally:
        client.event_hooks["request"].pop()
    assert [p for p in route_requests if "/archive/" in p] == ["/api/v1/archive/files"]
    assert not [p for p in route_requests if "/asset/" in p]
    assert [p for p in seen if "/asset/" in p]
    assert payload_digests(via_route) == payload_digests(per_asset)
    report = validate(via_route)
    assert report.problems == [], report.problems  # rewritten in the reference order
    with tiled_archive.open(via_route) as mine, tiled_archive.open(per_asset) as theirs:
        assert values(mine) == values(theirs)
    with open_archive(via_route) as archive:
        assert archive.manifest.extra["provenance"]["node"] == "/files"
