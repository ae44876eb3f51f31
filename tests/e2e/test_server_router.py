"""Streamed archives: stock ``tiled serve config`` with
``routers: [tiled_archive.serve.router:router]``.

The catalog holds registered files (every format of the sample tree, loaded by ``load``) and
data a client wrote through the server (arrays, tables). ``GET /api/v1/archive/{path}`` must
give a ZIP that validates (TA-W103 aside: its tag files come last) and holds the same files,
byte for byte, as ``download`` of the same node writes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import threading
import time
import zipfile
from html import unescape
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import zarr

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import CountingProxy, free_port, serving
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


def test_download_takes_the_archive_route_and_no_raw_asset(deployment, tmp_path):
    """With the route, download() asks only the route (its tail, then the members, by
    range); without it (streamed=False) the per-asset path; both give the same files and
    values."""
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
    assert via_route.streamed and not per_asset.streamed
    assert {p for p in route_requests if "/archive/" in p} == {"/api/v1/archive/files"}
    assert not [p for p in route_requests if "/asset/" in p]
    assert [p for p in seen if "/asset/" in p]
    assert payload_digests(via_route) == payload_digests(per_asset)
    report = validate(via_route)
    assert report.problems == [], report.problems  # rewritten in the reference order
    with tiled_archive.open(via_route) as mine, tiled_archive.open(per_asset) as theirs:
        assert values(mine) == values(theirs)
    with open_archive(via_route) as archive:
        assert archive.manifest.extra["provenance"]["node"] == "/files"


# -- No byte twice: the route's stream is deterministic, ranged, and read against the cache ------


@pytest.fixture(scope="module")
def bulk(deployment):
    """A node with 32 MB of client-written data, so that what a download moves besides the
    payload (the archive's tail: its first 1 MiB read, which holds the catalog; Tiled's
    metadata) is small beside it."""
    client = deployment["client"]
    if "bulk" not in client:
        bulk = client.create_container("bulk", metadata={"kind": "bulk"})
        rng = np.random.default_rng(5)
        for index in range(4):
            bulk.write_array(rng.random((1000, 1000)), key=f"frame{index}")
    return "bulk"


def test_the_route_answers_ranges_of_one_deterministic_stream(deployment, bulk):
    url = f"{deployment['url']}/api/v1/archive/{bulk}"
    params = {"api_key": KEY}
    head = httpx.head(url, params=params)
    whole = httpx.get(url, params=params, timeout=120)
    assert head.status_code == whole.status_code == 200
    assert int(head.headers["content-length"]) == len(whole.content)
    assert head.headers["etag"] == whole.headers["etag"]
    etag, size = whole.headers["etag"], len(whole.content)
    for start in (0, 1, 29, 4096, size // 2, size - 1):
        ranged = httpx.get(
            url, params=params, headers={"Range": f"bytes={start}-", "If-Range": etag}
        )
        assert ranged.status_code == 206, (dict(ranged.headers), etag)
        assert ranged.content == whole.content[start:]
    stale = httpx.get(url, params=params, headers={"Range": "bytes=5-", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == whole.content
    for tags in (etag, f"W/{etag}", f'"other", {etag}', "*"):  # compared weakly (RFC 9110)
        assert httpx.get(url, params=params, headers={"If-None-Match": tags}).status_code == 304
    assert httpx.get(url, params=params, headers={"If-None-Match": '"other"'}).status_code == 200


def _download_through(proxy: CountingProxy, node: str, dest: Path, **options):
    from tiled.client import from_uri

    client = from_uri(proxy.url, api_key=KEY)[node]
    before = proxy.received  # Tiled's client asked for the node's metadata
    result = tiled_archive.download(client, dest, **options)
    return result, proxy.received - before


def test_a_second_download_through_the_route_moves_almost_nothing(deployment, bulk, tmp_path):
    port = int(deployment["url"].rsplit(":", 1)[1])
    cache = tmp_path / "cache"
    with CountingProxy(port) as proxy:
        first, first_bytes = _download_through(proxy, bulk, tmp_path / "1.zip", cache_dir=cache)
        second, second_bytes = _download_through(proxy, bulk, tmp_path / "2", cache_dir=cache)
    assert first.streamed and second.streamed
    assert first.fetched_bytes > 30_000_000 and second.fetched_bytes == 0
    assert second.reused_bytes == first.fetched_bytes
    assert second_bytes <= 0.05 * first_bytes, (first_bytes, second_bytes)
    assert payload_digests(first) == sorted(entry["sha256"] for entry in _manifest(second)["files"])


def test_a_route_download_cut_halfway_resumes_where_it_stopped(deployment, bulk, tmp_path):
    port = int(deployment["url"].rsplit(":", 1)[1])
    with CountingProxy(port) as proxy:
        whole, whole_bytes = _download_through(
            proxy, bulk, tmp_path / "whole.zip", cache_dir=tmp_path / "other"
        )
    cache = tmp_path / "cache"
    cutting = CountingProxy(port, cut_after=whole_bytes // 2)
    with cutting as proxy, pytest.raises(ArchiveError) as cut:
        _download_through(proxy, bulk, tmp_path / "cut.zip", cache_dir=cache, retries=1)
    assert cut.value.code == "TA-E911" and proxy.cut
    assert not (tmp_path / "cut.zip").exists()
    with CountingProxy(port) as proxy:
        resumed, resumed_bytes = _download_through(
            proxy, bulk, tmp_path / "cut.zip", cache_dir=cache
        )
    # What came before the cut is not fetched again (the members, and the half-fetched one).
    assert resumed_bytes < 0.6 * whole_bytes, (whole_bytes, resumed_bytes)
    assert resumed.reused_bytes + resumed.fetched_bytes == whole.fetched_bytes
    assert payload_digests(resumed) == payload_digests(whole)
    assert validate(resumed).errors == []


def _manifest(archive) -> dict:
    with open_archive(archive) as opened:
        return {"files": [{"sha256": entry.sha256} for entry in opened.manifest.files]}


def test_a_member_corrupted_on_the_way_is_refused_and_nothing_is_written(
    deployment, bulk, tmp_path
):
    """A byte of a member changed between the route and the download (a proxy flips it): the
    member's digest is not the manifest's, TA-E308, nothing at the destination, nothing of
    it in the cache."""
    from tiled.client import from_uri

    port = int(deployment["url"].rsplit(":", 1)[1])
    cache = tmp_path / "cache"
    with CountingProxy(port) as proxy:
        node = from_uri(proxy.url, api_key=KEY)[bulk]
        proxy.flip_at = proxy.received + 5_000_000  # inside the first frame's data
        with pytest.raises(ArchiveError) as refused:
            tiled_archive.download(node, tmp_path / "bad.zip", cache_dir=cache)
    assert refused.value.code == "TA-E308" and "other bytes" in str(refused.value)
    assert not (tmp_path / "bad.zip").exists()
    assert not list((cache / "partial").iterdir())


def test_a_node_without_read_data_is_left_out_even_where_listed(deployment, tmp_path):
    """Below a container the policy's filters do not narrow (not kind "client"), a secret
    node is listed but has no `read:data` for the caller (its scopes): Tiled's data route
    refuses it, and the archive of its parent leaves it out (its data was in it)."""
    client = deployment["client"]
    if "open" not in client:
        shelf = client.create_container("open", metadata={"kind": "plain"})
        shelf.write_array(np.full(3, 1.0), key="public")
        shelf.write_array(np.full(3, 42.0), key="classified", metadata={"secret": True})
    listed = httpx.get(f"{deployment['url']}/api/v1/search/open", params={"api_key": KEY})
    assert "classified" in listed.text  # listed: the filters do not apply here
    raw = httpx.get(
        f"{deployment['url']}/api/v1/array/full/open/classified", params={"api_key": KEY}
    )
    assert raw.status_code == 403
    streamed = tmp_path / "open.zip"
    assert fetch(deployment, "open", streamed).status_code == 200
    with tiled_archive.open(streamed) as archive:
        assert list(archive["open"]) == ["public"]
    with zipfile.ZipFile(streamed) as zipped:
        assert not [name for name in zipped.namelist() if "classified" in name]


def test_a_file_rewritten_with_its_old_mtime_is_hashed_again(deployment, bulk):
    """A file rewritten in place, same size, its modification time put back (as `cp -p` or
    `rsync --inplace -t` leave it): the route's kept digests are not used for it (its ctime
    changed), so the ETag and the bytes are the new content's."""
    url = f"{deployment['url']}/api/v1/archive/{bulk}"
    params = {"api_key": KEY}
    before = httpx.head(url, params=params).headers["etag"]
    chunk = max(
        (path for path in (deployment["root"] / "written").rglob("*") if path.is_file()),
        key=lambda path: path.stat().st_size,
    )
    stat, content = chunk.stat(), chunk.read_bytes()
    try:
        with open(chunk, "r+b") as handle:  # same inode, same size, other bytes
            handle.write(content[::-1])
        os.utime(chunk, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert chunk.stat().st_mtime_ns == stat.st_mtime_ns
        after = httpx.get(url, params=params, timeout=120)
        assert after.status_code == 200 and after.headers["etag"] != before
        with zipfile.ZipFile(io.BytesIO(after.content)) as zipped:
            assert zipped.testzip() is None  # every member's CRC-32 is its bytes'
    finally:
        chunk.write_bytes(content)
        os.utime(chunk, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_update_through_the_route_fetches_only_changed_members(
    deployment, tmp_path, monkeypatch
):
    """The route's manifest gives every member's digest: an update reads the archive's tail
    and fetches only the members whose digest the old archive lacks. TILED_API_KEY goes only
    to the server of an archive this user downloaded: a copy from elsewhere needs the key
    given."""
    client = deployment["client"]
    living = client.create_container("living")
    try:
        living.write_array(np.zeros((64, 64)), key="kept")
        changing = living.write_array(np.zeros((64, 64)), key="changing")
        archive = tiled_archive.download(client["living"], tmp_path / "living")
        assert archive.streamed
        changing.write(np.ones((64, 64)))
        living.write_array(np.full(3, 2.0), key="added")
        handed = tmp_path / "handed-over"
        shutil.copytree(archive, handed)  # someone else's archive, as far as this user knows
        monkeypatch.setenv("TILED_API_KEY", KEY)
        with pytest.raises(ArchiveError, match="TA-E914.*TILED_API_KEY was not sent"):
            tiled_archive.update(handed)
        assert tiled_archive.update(handed, api_key=KEY, dry_run=True).differences.added
        result = tiled_archive.update(archive)  # downloaded here: the environment's key
        found = result.differences
        assert found.added == ("living/added",) and not found.removed
        assert [(c.path, c.kinds) for c in found.changed] == [("living/changing", ("data",))]
        assert result.fetched_bytes < 64 * 64 * 8  # the changed chunk and the new array
        fresh = tiled_archive.download(client["living"], tmp_path / "fresh.zip")
        assert tiled_archive.diff(archive, fresh).same
        assert validate(archive).valid
    finally:
        client.delete_contents("living", recursive=True, external_only=False)


# -- The download page and directory assets as ZIP ---------------------------------------------

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_gets_the_page_under_the_deployments_authentication(deployment, tmp_path):
    url = f"{deployment['url']}/api/v1/archive/written"
    assert httpx.get(url, headers={"Accept": BROWSER_ACCEPT}).status_code == 401
    query = {"filter[eq][condition][key]": "sample", "filter[eq][condition][value]": '"S1"'}
    page = httpx.get(url, params={"api_key": KEY, **query}, headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = unescape(page.text)
    # The search is shown and applied; every link keeps the key (no cookie in this flow).
    assert '<code>eq</code> (value): <code>"S1"</code>' in html
    href = re.search(r'class="download" href="([^"]+)"', html)[1]
    assert f"api_key={KEY}" in href and "format=zip" in href and "filter" in href
    assert f'href="/api/v1/archive/?api_key={KEY}"' in html
    zipped = httpx.get(deployment["url"] + href, timeout=60)
    assert zipped.status_code == 200
    assert re.search(r"<th>Size</th><td>[^<]*\(([\d,]+) bytes", html)[1] == (
        f"{len(zipped.content):,}"
    )
    (tmp_path / "one.zip").write_bytes(zipped.content)
    with tiled_archive.open(tmp_path / "one.zip") as archive:
        assert list(archive["written"]) == ["run1"]
    assert "<th>Nodes</th><td>4</td>" in html  # written, run1, its image and table


def test_a_directory_asset_streams_as_a_zip_under_the_nodes_access(deployment, tmp_path):
    node = deployment["client"]["written"]["run0"]["image"]  # Tiled writes a Zarr store
    asset = node.include_data_sources().data_sources()[0].assets[0]
    assert asset.is_directory
    url = f"{deployment['url']}/api/v1/asset/zip/written/run0/image"
    params = {"id": asset.id, "api_key": KEY}
    head = httpx.head(url, params=params)
    response = httpx.get(url, params=params, timeout=60)
    assert response.status_code == 200, response.text
    assert int(head.headers["content-length"]) == len(response.content)
    assert head.headers["etag"] == response.headers["etag"]
    (tmp_path / "image.zip").write_bytes(response.content)
    store = zarr.storage.ZipStore(tmp_path / "image.zip", mode="r")
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], node.read())
    assert httpx.get(url, params={"id": asset.id}).status_code == 401
    hidden = httpx.get(f"{deployment['url']}/api/v1/asset/zip/written/run3/image", params=params)
    assert hidden.status_code in (403, 404)  # as Tiled's own data routes answer for run3


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's; .ci/run installs it) driven by Playwright, which downloads
    no browser of its own. Without it the browser tests skip, unless
    ``TILED_ARCHIVE_REQUIRE_BROWSER`` is set (CI sets it): then they fail."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("TILED_ARCHIVE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    # Without these, Chromium reaches for Google's hosts at start (a closed network).
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        yield launched
        launched.close()


def test_in_a_browser_the_page_shows_the_catalog_and_its_button_saves_a_valid_archive(
    deployment, bulk, browser, tmp_path
):
    """Chromium opens the page (through a proxy the test can cut), the page matches the
    catalog, asks nothing of any other origin, and its Download button saves the archive;
    a download cut halfway is resumed by the browser (Range + If-Range) to the same bytes."""
    port = int(deployment["url"].rsplit(":", 1)[1])
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with CountingProxy(port) as proxy:
        page.goto(f"{proxy.url}/api/v1/archive/{bulk}?api_key={KEY}")
        assert page.title() == f"Archive of {bulk}"
        figures = {
            row.locator("th").inner_text(): row.locator("td").inner_text()
            for row in page.locator("table").first.locator("tr").all()
        }
        head = httpx.head(f"{deployment['url']}/api/v1/archive/{bulk}", params={"api_key": KEY})
        size = int(head.headers["content-length"])
        assert figures["Size"].endswith(f"({size:,} bytes, exact)")
        assert page.locator("table").nth(1).inner_text() == 'kind\t"bulk"'
        with page.expect_download() as started:
            page.get_by_role("link", name="Download").click()
        saved = tmp_path / started.value.suggested_filename
        started.value.save_as(saved)
        assert started.value.suggested_filename == f"{bulk}.zip"
        assert saved.stat().st_size == size
        report = validate(saved)
        assert report.valid and report.codes == {"TA-W103"}, report.problems
        with open_archive(saved) as archive:  # the page's figures are the archive's
            assert figures["Data files"] == str(len(archive.manifest.files))
            assert figures["Nodes"] == str(archive.node_count()) == "5"  # bulk, 4 arrays

        # Cut the next download halfway: the proxy breaks the connection, then mends at once.
        proxy.cut_after = proxy.received + size // 2

        def mend() -> None:
            while not proxy.cut:
                time.sleep(0.001)
            proxy.cut_after, proxy.cut = None, False

        mending = threading.Thread(target=mend, daemon=True)
        mending.start()
        before = proxy.received
        with page.expect_download() as again:
            page.get_by_role("link", name="Download").click()
        resumed = tmp_path / "resumed.zip"
        assert again.value.failure() is None
        again.value.save_as(resumed)
        mending.join(5)
        assert not mending.is_alive(), "the proxy never cut the download"
        assert resumed.read_bytes() == saved.read_bytes()
        # The browser asked for the rest, not the whole again.
        assert proxy.received - before < 1.3 * size, (proxy.received - before, size)
    assert requested and all(url.startswith(proxy.url) for url in requested), requested
    context.close()
