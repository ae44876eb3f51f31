"""The rules of incomplete archives (spec 4.1) as pure functions: the fetch record's checks
(TA-E310), with the property that an accepted URL never leaves the origin; its round trip
through the canonical manifest; the pieces a browse mirror parses requests and names folders
with. No server, no archive."""

from __future__ import annotations

import dataclasses
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiled_archive.browser import mirror_folder
from tiled_archive.browser.mirror import node_request
from tiled_archive.rules.manifest import (
    FetchRecord,
    FetchSource,
    FileEntry,
    Manifest,
    fetch_problems,
)
from tiled_archive.sources.lazy.work import _runs

ORIGIN = "https://tiled.example.org/api/v1/"
PATH = "data/scan/a.h5"


def _codes(origin: str = ORIGIN, url: str = "asset/bytes/scan/a?id=1", path: str = PATH):
    record = FetchRecord(origin, {path: FetchSource(url)})
    return [p.code for p in fetch_problems(record, {PATH})]


def test_a_plain_record_is_accepted():
    assert _codes() == []
    assert _codes(url="asset/bytes/w/x?id=3&relative_path=c%2F0%2F0") == []  # %2F in a query


@pytest.mark.parametrize(
    "origin",
    [
        "ftp://tiled.example.org/api/v1/",
        "https://user:secret@tiled.example.org/api/v1/",
        "https://tiled.example.org/api/v1/?api_key=x",
        "https://tiled.example.org/api/v1/#x",
        "https://tiled.example.org/api/v1",
        "https:///api/v1/",
        "file:///etc/",
    ],
)
def test_an_origin_that_is_not_a_plain_http_url_is_refused(origin):
    assert _codes(origin=origin) == ["TA-E310"]


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example.org/x",
        "//evil.example.org/x",
        "/api/v1/asset/bytes/x",
        "../admin",
        "asset/../../admin",
        "asset/%2e%2e/%2E%2E/admin",
        "asset%2F..%2Fadmin",
        "asset/bytes/a b",
        "asset/bytes/a#fragment",
        "asset\\bytes",
        "javascript:alert(1)",
    ],
)
def test_a_url_that_could_leave_the_origin_is_refused(url):
    assert _codes(url=url) == ["TA-E310"]


def test_a_fetch_entry_must_name_a_listed_file_and_only_fetched_files_may_lack_a_digest():
    assert _codes(path="data/other.h5") == ["TA-E310"]
    manifest = Manifest(
        catalog=FileEntry("catalog.db", 1, "0" * 64),
        files=(FileEntry(PATH, 5, None), FileEntry("data/b", 1, None)),
        created="2026-12-07T00:00:00Z",
        tiled_schema_revision="917dbbcfc4b1",
        fetch=FetchRecord(ORIGIN, {PATH: FetchSource("asset/bytes/a?id=1", '"e"', None)}),
    )
    with pytest.raises(Exception, match="TA-E310.*data/b"):
        Manifest.loads(manifest.dumps())
    complete = dataclasses.replace(manifest, files=manifest.files[:1])
    assert Manifest.loads(complete.dumps()) == complete  # the record round-trips, canonical


@given(st.text(alphabet="ab/.%2eEfF5c?=&:@;,~-_", min_size=1, max_size=24))
def test_an_accepted_url_stays_below_the_origin(url):
    """Whatever a URL holds, if the rules accept it, every reading of origin + url (RFC 3986
    resolution, httpx's own) names the origin's host and a path below the origin's."""
    if _codes(url=url):
        return
    origin = urlsplit(ORIGIN)
    for joined in (urljoin(ORIGIN, url), str(httpx.URL(ORIGIN + url))):
        parts = urlsplit(joined)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), joined
        assert parts.path.startswith(origin.path), joined


def test_requests_name_their_node():
    assert node_request("/api/v1/metadata/a/b") == (("a", "b"), False)
    assert node_request("/api/v1/search/a/b") == (("a", "b"), True)
    assert node_request("/api/v1/search/") == ((), True)
    assert node_request("/api/v1/array/full/a/x%20y") == (("a", "x y"), False)
    assert node_request("/api/v1/asset/bytes/a") == (("a",), False)
    assert node_request("/api/v1/") is None
    assert node_request("/api/v1/auth/whoami") is None
    assert node_request("/elsewhere/metadata/a") is None


def test_mirror_folders_are_named_by_server_and_node_and_never_collide():
    one = mirror_folder("http://host:8000/api/v1", ("scans", "2024"))
    assert one.name.startswith("host_8000_api_v1_scans_2024-") and "/" not in one.name
    assert one == mirror_folder("http://host:8000/api/v1", ("scans", "2024"))
    assert one != mirror_folder("http://host:8000/api/v1", ("scans_2024",))
    assert one != mirror_folder("https://host:8000/api/v1", ("scans", "2024"))
    assert ".." not in mirror_folder("http://host/api/v1", ("..", "..")).name.split("-")[0]


def test_blocks_group_into_runs():
    assert list(_runs([])) == []
    assert list(_runs([3])) == [(3, 3)]
    assert list(_runs([0, 1, 2, 5, 6, 9])) == [(0, 2), (5, 6), (9, 9)]
