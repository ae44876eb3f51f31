"""Archives mounted by a Tiled configuration (``tree: tiled_archive.serve:archive``), the app
built as ``tiled serve config`` builds it and run in-process: what the router does once the
app has started (routes in front of Tiled's, each once), and the deployment's
``expose_raw_assets: false`` still honoured."""

from __future__ import annotations

import contextlib
import sqlite3

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tiled_archive.reader import open_archive
from tiled_archive.serve.mount import router
from tiled_archive.serve.settings import WithSettings, new_settings, settings_of


@contextlib.asynccontextmanager
async def started(config: dict):
    """Tiled's app of ``config`` (a parsed configuration), started, with settings of its own
    (Tiled's are one per process: docs/upstream.md, bug 8), and an httpx client of it."""
    from tiled.server.app import build_app_from_config
    from tiled.server.settings import get_settings

    settings = new_settings()
    with settings_of(settings):
        app = build_app_from_config(config)
        app.dependency_overrides[get_settings]()
    async with LifespanManager(WithSettings(app, settings)) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def mounts(zip_path, names) -> dict:
    trees = [
        {
            "path": f"/runs/{name}",
            "tree": "tiled_archive.serve:archive",
            "args": {"path": str(zip_path)},
        }
        for name in names
    ]
    return {"trees": trees, "authentication": {"allow_anonymous_access": True}}


def csv_asset_id(zip_path) -> int:
    with open_archive(zip_path) as archive:
        catalog = archive.catalog_path()
    with contextlib.closing(sqlite3.connect(catalog)) as conn:
        rows = conn.execute("SELECT id, data_uri FROM assets").fetchall()
    (found,) = [asset for asset, uri in rows if uri.endswith("baseline.csv")]
    return found


@pytest.mark.anyio
async def test_the_routes_go_in_front_once_however_many_archives(sample_archives):
    async with started(mounts(sample_archives["zip"], ["a", "b", "c"])) as (app, client):
        routes = app.router.routes
        ours = [r for r in routes if getattr(r, "original_router", None) is router]
        assert routes[: len(ours)] == ours  # in front of Tiled's
        assert sorted(r.include_context.prefix for r in ours) == ["/api/v1", "/custom"]
        asset = csv_asset_id(sample_archives["zip"])
        for name in ["a", "b", "c"]:  # one file mounted three times: each its own tree
            answer = await client.get(f"/api/v1/asset/bytes/runs/{name}/scan/baseline?id={asset}")
            assert answer.status_code == 200 and answer.content.startswith(b"x,y,label")


@pytest.mark.anyio
async def test_the_deployment_can_turn_raw_assets_off(sample_archives):
    config = {**mounts(sample_archives["zip"], ["a"]), "expose_raw_assets": False}
    async with started(config) as (_, client):
        asset = csv_asset_id(sample_archives["zip"])
        refused = await client.get(f"/api/v1/asset/bytes/runs/a/scan/baseline?id={asset}")
        assert refused.status_code == 403
        read = await client.get(
            "/api/v1/table/full/runs/a/scan/baseline", headers={"Accept": "application/json"}
        )
        assert read.status_code == 200 and read.json()["label"] == list("abcde")
