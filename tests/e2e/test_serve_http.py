"""Serving over HTTP in processes of their own, on loopback: `tiled-archive serve`, and stock
`tiled serve catalog` on an extracted archive."""

from __future__ import annotations

import sys

import httpx
import pytest

from tiled_archive.testing import HOST, free_port, serving, tiled_archive_serve, tiled_serve_catalog

from ..conftest import tree_digests
from ..integration.test_serving import assert_same, read_values


@pytest.fixture(scope="module")
def served(sample_archives):
    return sample_archives


def test_tiled_archive_serve_over_http(served, sample_tree, tmp_path):
    from tiled.client import from_uri

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tiled_archive.cli",
        "serve",
        str(served["zip"]),
        "--port",
        str(port),
        "--api-key",
        "secret123",
    ]
    log = tmp_path / "serve.log"
    with serving(command, port, log=log) as server:
        client = from_uri(server.url, api_key="secret123")
        assert_same(read_values(client), sample_tree)
        with pytest.raises(Exception):  # noqa: B017 -- any refusal; no key means no access
            from_uri(server.url)["scan"]
        browser = httpx.get(f"{server.url}/?api_key=secret123", follow_redirects=True)
        assert browser.status_code == 200 and "<html" in browser.text.lower()
    lines = log.read_text().splitlines()
    # The banner: where to point a browser and a client, as stock `tiled serve` says it.
    assert f"navigate a web browser to: {server.url}/?api_key=secret123" in lines
    assert f"connect with: from_uri('{server.url}/api/v1', api_key='secret123')" in lines
    # What stock Tiled needs instead (not the seed's `tiled serve catalog DIR/`).
    stock = [line for line in lines if line.startswith("with stock Tiled instead: ")]
    assert len(stock) == 1 and "tiled-archive extract" in stock[0]
    assert f"tiled serve catalog {served['zip'].with_suffix('')}/catalog.db -r" in stock[0]
    # Every request is a line in Tiled's access format, the key in a URL masked; no colours
    # and no start-up chatter when the output is not a terminal.
    access = [line for line in lines if '" 200 ' in line or '" 401 ' in line]
    assert any('"GET /?api_key=*** HTTP/1.1" 200' in line for line in access)
    assert any("(singleuser)" in line and "/api/v1/" in line for line in access)
    assert not [line for line in access if "secret123" in line]
    assert "\x1b[" not in log.read_text() and "Tiled version" not in log.read_text()


def test_stock_tiled_serve_catalog_on_extracted_copy(served, sample_tree):
    from tiled.client import from_uri

    port = free_port()
    extracted = served["extracted"]
    before = tree_digests(extracted)
    command = tiled_serve_catalog(extracted / "catalog.db", extracted / "data", port, "--public")
    with serving(command, port) as server:
        assert_same(read_values(from_uri(server.url)), sample_tree)
    assert tree_digests(extracted) == before


def test_a_server_that_exits_before_listening_is_reported_with_its_output(tmp_path):
    log = tmp_path / "server.log"
    command = [sys.executable, "-c", "print('no such catalog'); raise SystemExit(3)"]
    with (
        pytest.raises(RuntimeError, match="no such catalog"),
        serving(command, free_port(), log=log),
    ):
        pass  # never reached


def test_anonymous_requests_are_refused_when_the_server_takes_a_key(served, tmp_path):
    port = free_port()
    command = tiled_archive_serve(served["zip"], port, "--api-key", "secret")
    with serving(command, port, log=tmp_path / "log"):
        url = f"http://{HOST}:{port}/api/v1/asset/bytes/scan/baseline?id=1"
        assert httpx.get(url).status_code == 401
        assert httpx.head(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Apikey secret"}).status_code == 200
