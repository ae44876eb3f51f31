"""Many archives in one stock Tiled deployment: ``tiled serve config`` with ``trees:`` entries
``tree: tiled_archive.serve:archive`` (a directory archive, a ZIP, a ZIP on a web server and
one in an S3 bucket, read by range requests, a relocated directory archive that was moved, a
tampered one) beside a catalog of its own.

Each archive lists and reads through Tiled's client as the files it was made from; raw
assets come from the archive only (the moved archive's URIs name a folder where decoys with a
canary now lie: stock Tiled's route hands those out); archive errors are coded 4xx answers,
not 500s; and the same config runs under uvicorn with two workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tiled_archive.reader import open_archive
from tiled_archive.testing import free_port, serving, static_files_command, tiled_serve_catalog
from tiled_archive.validator import validate
from tiled_archive.writer import convert

from ..integration.test_serving import assert_same, read_values
from ..servers import s3_bucket
from .test_server_routes import directory_asset_escapes, fetch, leaks, traversals

KEY = secrets.token_hex(16)
TILED = Path(sys.executable).parent / "tiled"
#: The archives the deployment mounts, below /runs.
MOUNTS = ["dir", "zip", "web", "s3", "moved", "tampered"]


def config_text(mounts: dict[str, Any], plain: Path | None = None) -> str:
    """A Tiled config: each archive under /runs/NAME, a catalog of its own under /plain (and
    then the archive route of :mod:`tiled_archive.serve.router` too, which changes nothing
    for the archives: the mounted ones' routes come first)."""
    lines = ["authentication:", f"  single_user_api_key: {KEY}", "trees:"]
    for name, mount in mounts.items():
        args = mount if isinstance(mount, dict) else {"path": str(mount)}
        lines += [
            f"  - path: /runs/{name}",
            "    tree: tiled_archive.serve:archive",
            f"    args: {json.dumps(args, default=str)}",  # YAML reads JSON
        ]
    if plain is not None:
        lines += [
            "  - path: /plain",
            "    tree: catalog",
            "    args:",
            f'      uri: "sqlite:///{plain / "catalog.db"}"',
            f'      readable_storage: ["{plain / "data"}"]',
            "routers: [tiled_archive.serve.router:router]",
        ]
    return "\n".join(lines) + "\n"


def server_env(root: Path) -> dict[str, str]:
    return {"TILED_ARCHIVE_CACHE": str(root / "cache")}


@pytest.fixture(scope="module")
def deployment(sample_archives, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield from _deployment(sample_archives, tmp_path_factory, stack)


def _deployment(sample_archives, tmp_path_factory, stack):
    root = tmp_path_factory.mktemp("mounted")
    # A ZIP published on a web server, read by range requests.
    (root / "web").mkdir()
    shutil.copy(sample_archives["zip"], root / "web" / "published.zip")
    # A relocated directory archive, moved after it was relocated: its URIs name the folder
    # it left, where files with a canary now lie (decoys an attacker placed, or just stale).
    token = secrets.token_hex(16)
    left = convert(sample_archives["zip"], root / "relocated-here")
    moved = root / "moved-away" / "archive"
    moved.parent.mkdir()
    os.rename(left, moved)
    with open_archive(moved) as archive:
        payload = archive.payload()
    for member in payload:
        decoy = left / member
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_text(f"CANARY-{token}")
    canary = root / "canary.txt"
    canary.write_text(f"CANARY-{token}")
    # A directory archive whose NPY file was altered after it was made (same size): its
    # header now says (6, 4), the catalog (4, 6).
    tampered = root / "tampered"
    shutil.copytree(sample_archives["dir"], tampered)
    npy = tampered / "data" / "scan" / "nested" / "deeper" / "table_values.npy"
    data = npy.read_bytes()
    npy.chmod(0o644)
    npy.write_bytes(data.replace(b"(4, 6)", b"(6, 4)"))
    web_port, port = free_port(), free_port()
    bucket = stack.enter_context(s3_bucket(sample_archives["zip"], "runs/archive.zip"))
    mounts = {
        "dir": sample_archives["dir"],
        "zip": sample_archives["zip"],
        "web": f"http://127.0.0.1:{web_port}/published.zip",
        "s3": {"path": "s3://facility/runs/archive.zip", "storage_options": bucket},
        "moved": moved,
        "tampered": tampered,
    }
    config = root / "config.yml"
    config.write_text(config_text(mounts, sample_archives["extracted"]))
    web_command, web_env = static_files_command(root / "web", web_port)
    stack.enter_context(serving(web_command, web_port, env=web_env))
    command = [TILED, "serve", "config", config, "--port", port]
    with serving(command, port, log=root / "serve.log", env=server_env(root)) as server:
        yield {
            "url": server.url,
            "port": port,
            "root": root,
            "mounts": mounts,
            "moved": moved,
            "left": left,
            "token": token.encode(),
            "canary": canary,
            "config": config,
        }


def client_of(deployment):
    from tiled.client import from_uri

    return from_uri(deployment["url"], api_key=KEY)


def asset_id_of(archive_path: Path, suffix: str) -> int:
    """The id of the asset whose URI ends with ``suffix`` in the archive's catalog."""
    with open_archive(archive_path) as archive:
        catalog = archive.catalog_path()
    with contextlib.closing(sqlite3.connect(catalog)) as conn:
        rows = conn.execute("SELECT id, data_uri FROM assets").fetchall()
    (found,) = [asset for asset, uri in rows if uri.endswith(suffix)]
    return found


def get(deployment, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{deployment['url']}{path}",
        params=params,
        headers={"Authorization": f"Apikey {KEY}"},
        timeout=60,
    )


@pytest.mark.parametrize("name", ["dir", "zip", "web", "s3", "moved"])
def test_each_mounted_archive_lists_and_reads_as_its_files(deployment, sample_tree, name):
    client = client_of(deployment)
    assert sorted(client["runs"]) == sorted(MOUNTS)
    assert sorted(client["plain"]["scan"]) == sorted(client["runs"][name]["scan"])
    assert_same(read_values(client["runs"][name]), sample_tree)


def test_raw_assets_come_from_the_archive_only(deployment, sample_archives):
    """The moved archive's URIs name files holding a canary: every raw asset of its nodes is
    the archive's own file (its manifest digest), none of them, and no traversal reaches out."""
    from tiled.client import from_uri

    client = from_uri(deployment["url"], api_key=KEY, include_data_sources=True)
    moved = client["runs/moved/scan"]
    with open_archive(deployment["moved"]) as archive:
        digests = {entry.path: entry.sha256 for entry in archive.manifest.files}
    served = 0
    for key in ["baseline", "summary", "nested/deeper/table_values", "primary"]:
        node = moved[key]
        for source in node.data_sources():
            for asset in source.assets:
                response = get(
                    deployment, f"/api/v1/asset/bytes/runs/moved/scan/{key}", id=str(asset.id)
                )
                assert response.status_code == 200, response.text
                assert deployment["token"] not in response.content
                assert hashlib.sha256(response.content).hexdigest() in digests.values()
                assert response.headers["etag"].strip('"') in digests.values()
                served += 1
    assert served >= 4
    # A directory asset's files (a Zarr store's metadata), and attempts to climb out of it.
    zarr_node = moved["v2array"]
    (asset,) = zarr_node.data_sources()[0].assets
    listing = get(deployment, "/api/v1/asset/manifest/runs/moved/scan/v2array", id=str(asset.id))
    assert ".zarray" in listing.json()["manifest"]
    zarray = get(
        deployment,
        "/api/v1/asset/bytes/runs/moved/scan/v2array",
        id=str(asset.id),
        relative_path=".zarray",
    )
    assert zarray.status_code == 200 and b"zarr_format" in zarray.content
    targets = [str(deployment["canary"]), "/etc/passwd"]
    urls = [
        url.replace("/api/v1/asset/bytes/", "/api/v1/asset/bytes/runs/moved/")
        for url in directory_asset_escapes(deployment["moved"], targets)
    ]
    # Traversal forms on the routes that take a path, and Tiled's /ui route (which serves
    # any file in Tiled 0.2.20, docs/upstream.md bug 1).
    for template in ["/ui/{}", "/api/v1/asset/bytes/runs/moved/{}?id=1", "/api/v1/metadata/{}"]:
        urls += [template.format(form) for target in targets for form in traversals(target)]
    assert leaks(deployment["port"], urls, deployment["token"], KEY) == []
    assert leaks(deployment["port"], urls, deployment["token"], None) == []
    status, body = fetch(deployment["port"], "/ui/", None)  # the bundled UI is still served
    assert status == 200 and b"<html" in body.lower()


def test_stock_tiled_hands_out_the_decoys_of_the_moved_archive(deployment):
    """What the router guards against: stock ``tiled serve catalog`` on the moved archive
    (even restricted to its own data/) answers ``/asset/bytes`` with the file its URI names,
    outside the archive: the canary (docs/upstream.md bug 3). The test above can fail."""
    moved = deployment["moved"]
    port = free_port()
    command = tiled_serve_catalog(moved / "catalog.db", moved / "data", port, "--api-key", KEY)
    asset_id = asset_id_of(moved, "baseline.csv")
    with serving(command, port, log=deployment["root"] / "stock.log"):
        status, body = fetch(port, f"/api/v1/asset/bytes/scan/baseline?id={asset_id}", KEY)
    assert status == 200 and deployment["token"] in body


def test_archive_errors_are_coded_answers_not_500s(deployment):
    """The tampered archive: reading its altered NPY through Tiled's own data route, and its
    raw file whole through the asset route, are 422s naming the rule broken."""
    read = get(deployment, "/api/v1/array/full/runs/tampered/scan/nested/deeper/table_values")
    assert read.status_code == 422 and "TA-E602" in read.json()["detail"]
    asset_id = asset_id_of(deployment["mounts"]["tampered"], "table_values.npy")
    raw = get(
        deployment,
        "/api/v1/asset/bytes/runs/tampered/scan/nested/deeper/table_values",
        id=str(asset_id),
    )
    assert raw.status_code == 422 and "TA-E308" in raw.json()["detail"]
    # Tiled's client shows the message of a 4xx (of a 5xx, only its status).
    with pytest.raises(Exception, match="TA-E602"):  # noqa: B017 -- Tiled's client error
        client_of(deployment)["runs/tampered/scan/nested/deeper/table_values"].read()
    # The rest of that archive, and every other, still reads.
    assert client_of(deployment)["runs/tampered/scan/v2array"].read().shape == (10, 10)


def test_a_write_to_a_mounted_archive_is_refused_cleanly(deployment):
    """The API key holds every scope, but the archive's catalog is read-only: a 405 (not a
    500 that Tiled's client retries), and nothing changes. (Writing an array's values is a
    500 from Tiled itself for any registered file, archive or not: docs/upstream.md.)"""
    from tiled.client import from_uri

    client = from_uri(deployment["url"], api_key=KEY)
    writes = [
        lambda: client["runs/zip"].create_container("new"),
        lambda: client["runs/zip/scan"].update_metadata({"changed": True}),
    ]
    for write in writes:
        with pytest.raises(Exception, match="405"):  # noqa: B017 -- Tiled's client error
            write()
    assert "new" not in client["runs/zip"] and "changed" not in client["runs/zip/scan"].metadata
    # Tiled deletes a node's files only once its transaction commits: here it never does.
    baseline = deployment["mounts"]["tampered"] / "data" / "scan" / "baseline.csv"
    before = baseline.read_bytes()
    url = f"{deployment['url']}/api/v1/metadata/runs/tampered/scan/baseline"
    params = {"external_only": "false"}
    headers = {"Authorization": f"Apikey {KEY}"}
    assert httpx.delete(url, params=params, headers=headers).status_code == 405
    assert baseline.read_bytes() == before and "baseline" in client["runs/tampered/scan"]


def test_a_catalog_beside_the_archives_hands_out_its_own_files(deployment, sample_archives):
    """The deployment's own catalog (not an archive): raw assets from its readable storage,
    confined there (a directory asset cannot be climbed out of, unlike Tiled's own route)."""
    from tiled.client import from_uri

    plain = from_uri(deployment["url"], api_key=KEY, include_data_sources=True)["plain/scan"]
    (asset,) = plain["baseline"].data_sources()[0].assets
    response = get(deployment, "/api/v1/asset/bytes/plain/scan/baseline", id=str(asset.id))
    on_disk = (sample_archives["extracted"] / "data" / "scan" / "baseline.csv").read_bytes()
    assert response.status_code == 200 and response.content == on_disk
    targets = [str(deployment["canary"]), "/etc/passwd"]
    urls = [
        url.replace("/api/v1/asset/bytes/", "/api/v1/asset/bytes/plain/")
        for url in directory_asset_escapes(sample_archives["extracted"], targets)
    ]
    assert leaks(deployment["port"], urls, deployment["token"], KEY) == []


def test_a_mounted_archives_node_streams_as_an_archive(deployment, tmp_path):
    """``/archive/runs/zip/scan`` (the node is ``scan`` in the archive's own catalog): a
    valid archive holding the archive's own files."""
    response = get(deployment, "/api/v1/archive/runs/zip/scan")
    assert response.status_code == 200, response.text
    streamed = tmp_path / "scan.zip"
    streamed.write_bytes(response.content)
    report = validate(streamed)
    assert report.valid and {p.code for p in report.problems} <= {"TA-W103"}
    with zipfile.ZipFile(streamed) as zipped, open_archive(deployment["mounts"]["zip"]) as archive:
        expected = {e.path: e.sha256 for e in archive.manifest.files}
        for name in zipped.namelist():
            if name.startswith("data/") and not name.endswith("/"):
                assert hashlib.sha256(zipped.read(name)).hexdigest() == expected[name]
    # A directory asset (a Zarr store) as a ZIP of its files, from the archive's members.
    asset = asset_id_of(deployment["mounts"]["zip"], "v2array.zarr")
    store = get(deployment, "/api/v1/asset/zip/runs/zip/scan/v2array", id=str(asset))
    assert store.status_code == 200, store.text
    with zipfile.ZipFile(io.BytesIO(store.content)) as zipped:
        assert ".zarray" in zipped.namelist()
        member = f"data/scan/v2array.zarr/{zipped.namelist()[-1]}"
        assert hashlib.sha256(zipped.read(zipped.namelist()[-1])).hexdigest() == expected[member]


def test_an_archive_that_cannot_be_served_stops_the_start_up_with_its_code(tmp_path):
    (tmp_path / "not-an-archive").mkdir()
    (tmp_path / "not-an-archive" / "notes.txt").write_text("hello")
    config = tmp_path / "config.yml"
    config.write_text(config_text({"bad": tmp_path / "not-an-archive"}))
    command = [TILED, "serve", "config", config, "--port", free_port()]
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **server_env(tmp_path)},
    )
    assert done.returncode != 0
    assert "TA-E001" in done.stderr + done.stdout


def test_two_workers_serve_the_same_config(deployment, sample_archives, tmp_path):
    """``uvicorn --factory tiled.server.app:app_factory --workers 2`` (stock ``tiled serve
    config`` runs one process: docs/upstream.md): each worker opens the archives and installs
    the router; concurrent requests all get the archive's files and coded errors."""
    config = tmp_path / "config.yml"
    mounts = {"zip": sample_archives["zip"], "tampered": deployment["mounts"]["tampered"]}
    config.write_text(config_text(mounts))
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "tiled.server.app:app_factory"]
    command += ["--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "workers.log"
    env = {"TILED_CONFIG": str(config), **server_env(tmp_path)}
    with serving(command, port, log=log, env=env, timeout=120) as server:
        with open_archive(sample_archives["zip"]) as archive:
            digests = {entry.sha256 for entry in archive.manifest.files}
        from tiled.client import from_uri

        client = from_uri(server.url, api_key=KEY, include_data_sources=True)
        (asset,) = client["runs/zip/scan/baseline"].data_sources()[0].assets
        paths = [f"/api/v1/asset/bytes/runs/zip/scan/baseline?id={asset.id}"] * 16
        paths += ["/api/v1/array/full/runs/tampered/scan/nested/deeper/table_values"] * 16
        paths += ["/ui/" + quote("/" + str(sample_archives["zip"]).lstrip("/"))] * 8

        def ask(path: str) -> httpx.Response:
            return httpx.get(server.url + path, headers={"Authorization": f"Apikey {KEY}"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, paths))
    for path, answer in zip(paths, answers, strict=True):
        if "/asset/bytes/" in path:
            assert answer.status_code == 200 and answer.headers["etag"].strip('"') in digests
        elif "/array/" in path:
            assert answer.status_code == 422 and "TA-E602" in answer.json()["detail"]
        else:  # the confined /ui route: Tiled's index page, not the ZIP
            assert answer.status_code == 200 and b"PK" not in answer.content[:4]
    assert log.read_text().count("Started server process") == 2
