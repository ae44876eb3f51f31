"""Tiled used as a library, without the noise meant for a server's console.

Tiled's server logs "Tiled version X" at INFO on every app start-up (its logger has its own
stream handler), and its client's in-process transport imports Starlette's TestClient, which
warns that it is deprecated. Neither says anything to a user of ``create``, ``download`` or
``tiled_archive.open``, where an app is started per call: both are silenced for the block, and
the logger's level is put back after it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

#: The logger Tiled's app start-up banner goes to.
STARTUP_LOGGER = "tiled.server.app"


@contextlib.contextmanager
def quiet_tiled() -> Iterator[None]:
    """Within the block: no Tiled start-up banner, no deprecation warnings from Tiled's
    dependencies (Starlette's own is a UserWarning)."""
    import tiled.server.app  # noqa: F401 -- it sets its logger's level when imported

    logger = logging.getLogger(STARTUP_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
            yield
    finally:
        logger.setLevel(level)
