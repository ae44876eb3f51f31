"""Remote archives: a ZIP on a real web server on loopback, read by HTTP range requests.

The server is Starlette's StaticFiles under uvicorn (ETag, Last-Modified, single ranges, as
nginx answers them), with a middleware that counts requests; the one that ignores ``Range``
is Python's own ``http.server``. Values read remotely must equal the local archive's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import free_port
from tiled_archive.validator import validate
from tiled_archive.writer import convert, create

from ..conftest import cli
from ..servers import StaticServer, s3_bucket


@pytest.fixture(scope="module")
def published(tmp_path_factory, sample_tree):
    """The sample tree (every file format) and 8 MiB of arrays, as a ZIP on a web server."""
    root = tmp_path_factory.mktemp("remote")
    sources = root / "sources"
    shutil.copytree(sample_tree, sources / "scan")
    rng = np.random.default_rng(1)
    for index in range(4):
        np.save(sources / f"block_{index}.npy", rng.random((512, 512)))  # 2 MiB each
    create(root / "archive", [sources], quiet=True)
    www = root / "www"
    www.mkdir()
    convert(root / "archive", www / "archive.zip", quiet=True)
    server = StaticServer(www)
    yield {"server": server, "www": www, "local": www / "archive.zip"}
    server.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TILED_ARCHIVE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def values(client) -> dict[str, object]:
    """Every node's values, by path (arrays as bytes + shape, tables as CSV text)."""
    found: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, child in node.items():
            path = f"{prefix}/{key}"
            family = child.structure_family
            if family == "container":
                walk(child, path)
            elif family == "array":
                array = child.read()
                found[path] = (array.shape, str(array.dtype), array.tobytes())
            else:
                found[path] = child.read().to_csv()

    walk(client, "")
    return found


def test_a_remote_archive_reads_as_the_local_one_in_few_requests(published, cache):
    server, url = published["server"], published["server"].url("archive.zip")
    with tiled_archive.open(published["local"]) as local:
        expected = values(local)
    server.requests.clear()
    with open_archive(url) as archive:
        archive.catalog_path()
        opened = list(server.requests)
    assert len(opened) <= 3, opened  # tail; tag files; catalog.db
    server.requests.clear()
    with open_archive(url) as archive:
        archive.catalog_path()
        warm = list(server.requests)
    assert len(warm) <= 2, warm  # the catalog came from the cache
    with tiled_archive.open(url) as remote:
        assert values(remote) == expected
    assert len(expected) >= 10


def test_remote_validate_gives_the_local_verdict_and_finds_damage(published, tmp_path):
    url = published["server"].url("archive.zip")
    assert validate(url).problems == validate(published["local"]).problems == []
    damaged = published["www"] / "damaged.zip"
    data = bytearray(published["local"].read_bytes())
    with open_archive(published["local"]) as archive:
        span = archive.span("data/sources/block_2.npy")
    data[span.offset + span.length // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    remote = validate(published["server"].url("damaged.zip"))
    assert remote.codes == validate(damaged).codes == {"TA-E111", "TA-E308"}


def test_a_server_that_ignores_range_is_a_coded_error(published):
    """Python's http.server answers every GET with the whole file (200)."""
    port = free_port()
    stock = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=published["www"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/archive.zip"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        with pytest.raises(ArchiveError) as raised:
            open_archive(url)
        assert raised.value.code == "TA-E930" and "whole file" in str(raised.value)
        assert "Range" in raised.value.problem.fix
        assert validate(url).codes == {"TA-E930"}
    finally:
        stock.terminate()
        stock.wait(10)


def test_an_archive_replaced_while_read_is_a_coded_error(published, tmp_path, cache):
    moving = published["www"] / "moving.zip"
    shutil.copyfile(published["local"], moving)
    with open_archive(published["server"].url("moving.zip")) as archive:
        first = archive.read("data/sources/block_0.npy")
        replacement = tmp_path / "replacement.zip"
        shutil.copyfile(published["local"], replacement)
        with open(replacement, "ab") as grown:
            grown.write(b"\0" * 10)  # another size, another ETag
        os.replace(replacement, moving)
        with pytest.raises(ArchiveError) as raised:
            archive.read("data/sources/block_3.npy")
    assert raised.value.code == "TA-E931"
    assert hashlib.sha256(first).hexdigest()  # the first read was whole


def test_missing_remote_archive_and_cli_over_a_url(published, tmp_path, cache):
    missing = published["server"].url("nothing-here.zip")
    with pytest.raises(ArchiveError) as raised:
        open_archive(missing)
    assert raised.value.code == "TA-E930" and "404" in str(raised.value)
    url = published["server"].url("archive.zip")
    checked = cli("validate", url)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"VALID {url}: 0 errors")
    shown = cli("info", url)
    assert shown.returncode == 0 and url in shown.stdout and "block_" in shown.stdout
    absent = cli("validate", missing)
    assert absent.returncode == 1 and "TA-E930" in absent.stdout
    extracted = tmp_path / "extracted"
    done = cli("extract", url, extracted)
    assert done.returncode == 0, done.stderr
    assert validate(extracted).problems == []


@pytest.fixture(scope="module")
def bucket(published):
    """The archive in a bucket of a real S3-compatible server (moto's, on loopback)."""
    with s3_bucket(published["local"], "scans/archive.zip") as options:
        yield options


def test_an_archive_in_an_s3_bucket_reads_as_the_local_one(published, bucket, cache, monkeypatch):
    url = "s3://facility/scans/archive.zip"
    with tiled_archive.open(published["local"]) as local:
        expected = values(local)
    with open_archive(url, bucket) as archive:
        archive.catalog_path()
        assert archive.source.file.requests <= 3
    with tiled_archive.open(url, storage_options=bucket) as remote:
        assert values(remote) == expected
    assert validate(url, storage_options=bucket).problems == []
    # boto3's own environment, as a user on a cluster has it
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bucket["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bucket["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    checked = cli("validate", url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with pytest.raises(ArchiveError) as raised:
        open_archive("s3://facility/scans/nothing.zip")
    assert raised.value.code == "TA-E930" and "404" in str(raised.value)


def lying_server(archive: bytes, lie: str):
    """An ASGI app that answers 206 to every range request of ``archive``, lying: ``more``
    sends the whole file whatever was asked (with the Content-Range asked for), ``huge``
    claims a file of 10**15 bytes, ``gzip`` sends a body of 1 MiB on the wire that inflates
    to 1 GiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()

    async def app(scope, receive, send):
        asked = dict(scope["headers"]).get(b"range", b"").decode().removeprefix("bytes=")
        first, _, last = asked.partition("-")
        size = len(archive)
        start = size - int(last) if not first else int(first)
        end = size - 1 if not first or not last else min(int(last), size - 1)
        start = max(start, 0)
        total = 10**15 if lie == "huge" else size
        body = archive if lie == "more" else bomb if lie == "gzip" else archive[start : end + 1]
        headers = [(b"content-range", f"bytes {start}-{end}/{total}".encode())]
        if lie == "gzip":
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 206, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize("lie", ["more", "huge", "gzip"])
def test_a_lying_server_gets_a_coded_error_and_little_memory(published, lie):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    server = StaticServer(app=lying_server(published["local"].read_bytes(), lie))
    try:
        with pytest.raises(ArchiveError) as raised, open_archive(server.url("archive.zip")) as a:
            a.read("data/sources/block_1.npy")
    finally:
        server.stop()
    assert raised.value.code in ("TA-E930", "TA-E100"), raised.value
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, grown_mb
