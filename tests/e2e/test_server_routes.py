"""Every route of `tiled-archive serve`, tried with path traversal forms: nothing outside the
archive (a canary file beside it, /etc/passwd) ever comes back, with or without a key.

The same requests against stock `tiled serve catalog` show the canary: the test can fail.
"""

from __future__ import annotations

import http.client
import re
import secrets
import sqlite3
from urllib.parse import quote

import pytest

from tiled_archive.reader import open_archive
from tiled_archive.serve.app import ArchiveServer
from tiled_archive.testing import HOST, free_port, serving, tiled_archive_serve, tiled_serve_catalog
from tiled_archive.writer import convert, create

KEY = secrets.token_hex(32)  # stock Tiled takes only strong keys
PASSWD = b"root:x:0:"


@pytest.fixture(scope="module")
def archives(sample_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("routes")
    directory = create(out / "dir", [sample_tree])
    packed = convert(directory, out / "packed.zip")
    extracted = convert(packed, out / "extracted")
    token = secrets.token_hex(16)
    canary = out / "canary.txt"
    canary.write_text(f"CANARY-{token}")
    return {"zip": packed, "extracted": extracted, "canary": canary, "token": token.encode()}


def traversals(target: str) -> list[str]:
    """Forms of a path parameter that try to reach the absolute path ``target``."""
    inner = target.lstrip("/")
    up = 16
    return [
        "/" + inner,  # //abs: an absolute path joined onto a folder
        "../" * up + inner,
        "%2e%2e/" * up + inner,
        "..%2f" * up + inner.replace("/", "%2f"),
        "%2F" + inner.replace("/", "%2F"),
        "..%5c" * up + inner,  # backslash
        "x%00/" + "../" * up + inner,  # NUL
    ]


def route_templates(archive) -> list[str]:
    """Every route path of the app, as Tiled builds it over this archive: the app's own routes
    and mounts, and the API routers' (as their OpenAPI schema lists them). A route without a
    parameter gets one appended, to try what lies below it."""
    server = ArchiveServer(open_archive(archive))
    try:
        paths = [getattr(route, "path", None) for route in server.tiled_app.routes]
        paths += list(server.tiled_app.openapi()["paths"])
        return sorted(
            {p if "{" in p else p.rstrip("/") + "/{path:path}" for p in paths if p is not None}
        )
    finally:
        server.close()


def requests_for(templates: list[str], targets: list[str]) -> list[str]:
    urls = []
    for template in templates:
        for target in targets:
            for form in traversals(target):
                urls.append(re.sub(r"\{[^}]+\}", form.replace("\\", "\\\\"), template))
        urls.append(
            re.sub(r"\{[^}]+\}", "x", template)
            + "?id=1&relative_path="
            + "../" * 16
            + targets[0].lstrip("/")
        )
    return urls


def fetch(port: int, url: str, key: str | None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {"Authorization": f"Apikey {key}"} if key else {}
        connection.request("GET", url, headers=headers)  # sent as written: no normalization
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def leaks(port: int, urls: list[str], token: bytes, key: str | None) -> list[tuple[str, int]]:
    found = []
    for url in urls:
        status, body = fetch(port, url, key)
        if token in body or PASSWD in body:
            found.append((url, status))
    return found


@pytest.mark.slow  # a fault or an attack: make test-slow
def test_no_route_of_tiled_archive_serve_reads_outside_the_archive(archives):
    templates = route_templates(archives["zip"])
    assert len(templates) > 40  # Tiled's API, UI, docs and static routes
    assert "/ui/{path:path}" in templates
    urls = requests_for(templates, [str(archives["canary"]), "/etc/passwd"])
    port = free_port()
    with serving(tiled_archive_serve(archives["zip"], port, "--api-key", KEY), port):
        assert leaks(port, urls, archives["token"], None) == []
        assert leaks(port, urls, archives["token"], KEY) == []
        # The bundled UI itself is still served.
        status, body = fetch(port, "/ui/", None)
        assert status == 200 and b"<html" in body.lower()


def test_the_same_requests_leak_from_stock_tiled(archives):
    """Stock Tiled 0.2.20 answers `/ui//ABS` with the file (docs/upstream.md): these requests
    do reach outside when nothing guards the route."""
    extracted = archives["extracted"]
    port = free_port()
    command = tiled_serve_catalog(
        extracted / "catalog.db", extracted / "data", port, "--api-key", KEY
    )
    url = "/ui/" + "/" + str(archives["canary"]).lstrip("/")
    with serving(command, port, log=archives["canary"].with_name("stock.log")):
        status, body = fetch(port, url, None)
    assert status == 200 and archives["token"] in body


def directory_asset_escapes(archive, targets: list[str]) -> list[str]:
    """`/asset/bytes` requests for each directory asset of the archive (Zarr stores) whose
    ``relative_path`` climbs out of it towards each of ``targets`` (absolute paths)."""
    with open_archive(archive) as opened, sqlite3.connect(opened.catalog_path()) as conn:
        assets = conn.execute(
            "SELECT a.id, s.node_id FROM assets a"
            " JOIN data_source_asset_association d ON d.asset_id = a.id"
            " JOIN data_sources s ON s.id = d.data_source_id WHERE a.is_directory = 1"
        ).fetchall()
        paths = {}
        for node_id in {n for _, n in assets}:
            segments, parent = [], node_id
            while parent is not None:
                key, parent = conn.execute(
                    "SELECT key, parent FROM nodes WHERE id = ?", (parent,)
                ).fetchone()
                segments.append(key)
            paths[node_id] = "/".join(reversed([s for s in segments if s]))
    assert assets
    urls = []
    for asset_id, node_id in assets:
        for target in targets:
            for form in ["../" * 16 + target.lstrip("/"), target, "x/" + "../" * 16 + target]:
                urls.append(
                    f"/api/v1/asset/bytes/{paths[node_id]}?id={asset_id}"
                    f"&relative_path={quote(form)}"
                )
    return urls


@pytest.mark.slow  # a fault or an attack: make test-slow
def test_directory_assets_cannot_be_climbed_out_of(archives):
    targets = [str(archives["canary"]), "/etc/passwd"]
    urls = directory_asset_escapes(archives["zip"], targets)
    port = free_port()
    with serving(tiled_archive_serve(archives["zip"], port, "--api-key", KEY), port):
        assert leaks(port, urls, archives["token"], KEY) == []
    # Stock Tiled 0.2.20 over the same catalog hands the files out (docs/upstream.md, bug 2).
    extracted = archives["extracted"]
    port = free_port()
    command = tiled_serve_catalog(
        extracted / "catalog.db", extracted / "data", port, "--api-key", KEY
    )
    with serving(command, port, log=archives["canary"].with_name("stock-assets.log")):
        assert leaks(port, urls, archives["token"], KEY) != []
