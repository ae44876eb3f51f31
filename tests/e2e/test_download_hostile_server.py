"""A server that lies about its assets: `tiled-archive serve` behind a proxy that rewrites the
asset URIs and directory listings it reports. Whatever it says, a download ends in an archive
that validates (the node falls back to the data API) or in a coded error, never in a
traceback, and never writes outside its destination."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import tiled_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import HOST, free_port, serving, tiled_archive_serve
from tiled_archive.validator import validate
from tiled_archive.writer import convert, create

# Asset id -> the URI the proxy reports instead (ids as `create` numbers the sample tree).
URI_LIES = {
    "double-slash": {1: "//data/scan/baseline.csv"},
    "two-files-one-path": {1: "data/scan/primary.h5"},
    "an-alias-of-another-file": {1: "data//scan/primary.h5"},
    "a-file-where-a-folder-is": {1: "data/scan/v3array.zarr"},
    "mixed-roots": {1: "//srv/x/baseline.csv"},
    "dot-dot": {1: "data/../../../../tmp/escaped"},
}
LISTING_LIES = {
    "listing-of-non-strings": [1, None],
    "listing-a-string": "zarr.json",
    "listing-missing": None,
}


def lie(mode: str, body: dict, path: str) -> dict:
    def walk(value):
        if isinstance(value, dict):
            if "data_uri" in value and "id" in value:
                value["data_uri"] = URI_LIES.get(mode, {}).get(value["id"], value["data_uri"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body)
    if "/asset/manifest" in path and mode in LISTING_LIES:
        if LISTING_LIES[mode] is None:
            body.pop("manifest", None)
        else:
            body["manifest"] = LISTING_LIES[mode]
    return body


def lying_proxy(mode: str, upstream: int, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            connection = http.client.HTTPConnection(HOST, upstream, timeout=60)
            dropped = {"host", "accept-encoding"}
            if "/asset/bytes" not in self.path:
                dropped.add("accept")  # JSON, to rewrite (not msgpack)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            headers["Accept-Encoding"] = "identity"
            if "/asset/bytes" not in self.path:
                headers["Accept"] = "application/json"
            connection.request("GET", self.path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if "json" in (response.getheader("content-type") or ""):
                text = body.replace(f":{upstream}".encode(), f":{port}".encode())
                body = json.dumps(lie(mode, json.loads(text), self.path)).encode()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((HOST, int(port)), Handler)


@pytest.fixture(scope="module")
def served_sample(sample_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("lying")
    packed = convert(create(out / "dir", [sample_tree]), out / "sample.zip")
    port = free_port()
    with serving(tiled_archive_serve(packed, port, "--public"), port, log=out / "serve.log"):
        yield int(port)


@pytest.mark.parametrize("mode", [*URI_LIES, *LISTING_LIES])
def test_a_lying_server_gives_a_valid_archive_or_a_coded_error(served_sample, tmp_path, mode):
    from tiled.client import from_uri

    port = free_port()
    proxy = lying_proxy(mode, served_sample, port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    dest = tmp_path / "out" / "copy.zip"
    dest.parent.mkdir()
    try:
        client = from_uri(f"http://{HOST}:{port}")
        try:
            tiled_archive.download(client, dest, cache_dir=tmp_path / "cache")
        except ArchiveError as err:
            assert err.code.startswith("TA-E"), err
        else:
            report = validate(dest)
            assert report.errors == [], report.errors
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert not (tmp_path.parent / "escaped").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in ([], ["copy.zip"])
