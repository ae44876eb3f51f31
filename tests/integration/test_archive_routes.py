"""The archive routes of `tiled-archive serve` (in-process: what ``tiled_archive.open`` runs):
the download page, the node's archive as a ZIP with exact length and ranges, and a directory
asset as a ZIP. tests/e2e/test_server_router.py asks the same of a stock Tiled server."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from html import unescape

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.validator import validate


# The directory form under make test-slow: the routes are the same, the members read otherwise.
@pytest.fixture(scope="module", params=["zip", pytest.param("dir", marks=pytest.mark.slow)])
def served(request, sample_archives):
    """(client, HTTP client, API URL) of a served sample archive."""
    with tiled_archive.open(sample_archives[request.param]) as client:
        yield client, client.context.http_client, str(client.context.api_uri).rstrip("/")


def figure(html: str, name: str) -> str:
    return unescape(re.search(rf"<th>{name}</th><td>(.*?)</td>", html)[1])


def test_the_page_shows_what_the_download_button_gives(served, tmp_path):
    client, http, api = served
    page = http.get(f"{api}/archive/scan/nested", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    href = unescape(re.search(r'class="download" href="([^"]+)"', html)[1])
    assert href.endswith("/archive/scan/nested?format=zip")
    head = http.head(f"{api}/archive/scan/nested")
    size = int(head.headers["content-length"])
    assert figure(html, "Size").endswith(f"({size:,} bytes, exact)")
    origin = api.removesuffix("/api/v1")
    zipped = http.get(origin + href)
    assert zipped.status_code == 200 and len(zipped.content) == size
    (tmp_path / "nested.zip").write_bytes(zipped.content)
    report = validate(tmp_path / "nested.zip")
    assert report.valid and report.codes == {"TA-W103"}, report.problems
    with open_archive(tmp_path / "nested.zip") as archive:
        assert figure(html, "Data files") == f"{len(archive.manifest.files):,}"
        assert figure(html, "Nodes") == f"{archive.node_count():,}"
    assert '<a href="/api/v1/archive/">(root)</a>' in html
    assert 'href="/ui/browse/scan/nested"' in html
    assert '<a href="/api/v1/archive/scan">scan</a>' in html
    assert figure(html, "Nodes") == "5"  # its parent scan, nested, single, deeper, its array
    assert unescape(figure(html, "File")).startswith("<code>nested.zip</code>")


def full(http, url: str) -> tuple[bytes, str]:
    response = http.get(url)
    assert response.status_code == 200, response.text
    return response.content, response.headers["etag"]


@pytest.mark.parametrize("route", ["archive", "asset"])
def test_a_range_from_any_offset_is_that_span_of_the_whole(served, route):
    client, http, api = served
    if route == "archive":
        url = f"{api}/archive/scan"
    else:
        asset = client["scan"]["v2array"].include_data_sources().data_sources()[0].assets[0]
        url = f"{api}/asset/zip/scan/v2array?id={asset.id}"
    whole, etag = full(http, url)
    assert int(http.head(url).headers["content-length"]) == len(whole)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(start=st.integers(0, len(whole) - 1), length=st.none() | st.integers(1, 9000))
    def spans(start, length):
        end = "" if length is None else str(start + length - 1)
        response = http.get(url, headers={"Range": f"bytes={start}-{end}", "If-Range": etag})
        assert response.status_code == 206
        stop = len(whole) if length is None else start + length
        assert response.content == whole[start:stop]

    spans()
    # Offsets inside the first local header, its alignment padding, and the central directory.
    for start in (1, 30, 100, 4095, len(whole) - 22):
        response = http.get(url, headers={"Range": f"bytes={start}-", "If-Range": etag})
        assert response.content == whole[start:]
    # A copy of other bytes (another ETag) gets the whole, not a span of something else.
    other = http.get(url, headers={"Range": "bytes=10-", "If-Range": '"other"'})
    assert other.status_code == 200 and other.content == whole


@pytest.mark.parametrize("store", ["v2array", "v3array"])
def test_a_zarr_stores_zip_opens_with_zarrs_zipstore(served, store, tmp_path):
    client, http, api = served
    node = client["scan"][store]
    asset = node.include_data_sources().data_sources()[0].assets[0]
    assert asset.is_directory
    response = http.get(f"{api}/asset/zip/scan/{store}?id={asset.id}")
    assert response.status_code == 200, response.text
    assert f'filename="{store}-{asset.id}.zip"' in response.headers["content-disposition"]
    (tmp_path / "store.zip").write_bytes(response.content)
    with zipfile.ZipFile(tmp_path / "store.zip") as zipped:
        assert zipped.testzip() is None
        names = zipped.namelist()
    assert names and not any(name.startswith(("/", "data/")) for name in names)
    array = zarr.open_array(zarr.storage.ZipStore(tmp_path / "store.zip", mode="r"), mode="r")
    np.testing.assert_array_equal(array[...], node.read())


def test_a_file_asset_is_not_zipped(served):
    client, http, api = served
    asset = client["scan"]["baseline"].include_data_sources().data_sources()[0].assets[0]
    response = http.get(f"{api}/asset/zip/scan/baseline?id={asset.id}")
    assert response.status_code == 400 and "/asset/bytes/" in response.text
    missing = http.get(f"{api}/asset/zip/scan/baseline?id=999999")
    assert missing.status_code == 404


def test_the_archive_of_a_node_holds_the_served_archives_own_bytes(served, sample_archives):
    client, http, api = served
    whole, _ = full(http, f"{api}/archive/scan/frames")
    with zipfile.ZipFile(io.BytesIO(whole)) as zipped:
        got = {
            name: hashlib.sha256(zipped.read(name)).hexdigest()
            for name in zipped.namelist()
            if name.startswith("data/")
        }
    with open_archive(sample_archives["zip"]) as archive:
        listed = {entry.path: entry.sha256 for entry in archive.manifest.files}
    assert got and all(listed[name] == digest for name, digest in got.items())
    assert all("frame_" in name for name in got)


@pytest.mark.parametrize(
    "query",
    [
        {"filter[eq][condition][key]": "x"},  # no value
        {"filter[eq][condition][key]": "title", "filter[eq][condition][value]": "notjson"},
        {"filter[nosuch][condition][key]": "x"},
        {"filter[eq][condition][bogus]": "x"},
        {"filter[a___b][condition][c]": "x"},
        {"filter[lookup][condition][key]": "scan"},
        {"filter[structure_family][condition][value]": "bogus"},
    ],
)
def test_a_malformed_search_is_a_400_not_a_traceback(served, query):
    client, http, api = served
    for accept in ("*/*", "text/html"):
        response = http.get(f"{api}/archive/scan", params=query, headers={"Accept": accept})
        assert response.status_code == 400, response.text


def test_head_answers_as_get_would_for_a_browser_too(served):
    client, http, api = served
    for accept in ("text/html", "*/*"):
        head = http.head(f"{api}/archive/scan", headers={"Accept": accept})
        got = http.get(f"{api}/archive/scan", headers={"Accept": accept})
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) == len(got.content) and not head.content
        assert "Accept" in got.headers["vary"]
