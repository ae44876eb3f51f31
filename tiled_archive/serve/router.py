"""Archives streamed by a stock Tiled server, and their download page.

Enabled by one line in a Tiled configuration::

    routers:
      - tiled_archive.serve.router:router

It adds ``GET|HEAD /api/v1/archive/{path}`` (the node's archive as a ZIP; a browser gets the
download page) and ``GET|HEAD /api/v1/asset/zip/{path}?id=N`` (a directory asset as a ZIP),
described in :mod:`.archive_routes`, over the files of the deployment's catalog (its
``file:`` assets, read where the catalog names them).
"""

from __future__ import annotations

from .archive_payloads import StoragePayload
from .archive_routes import archive_router

router = archive_router(StoragePayload())

__all__ = ["router"]
