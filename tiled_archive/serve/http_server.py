"""Serve over HTTP: uvicorn on Tiled's app (:func:`serve`), with Tiled's access-log format and
API keys masked in logged URLs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..reader import open_archive
from .app import ArchiveServer
from .quiet import quiet_tiled


def serve(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    public: bool = False,
    api_key: str | None = None,
    access_log: bool = True,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve an archive over HTTP with uvicorn until interrupted; ``ready`` is called once
    the archive has opened, before the server starts. With ``access_log`` every request is
    a line on stdout in Tiled's own format (as ``tiled serve`` logs them), API keys in URLs
    masked."""
    import uvicorn

    with quiet_tiled():
        server = ArchiveServer(open_archive(path), api_key=api_key, public=public)
    try:
        if ready is not None:
            ready()
        uvicorn.run(
            server.app, host=host, port=port, log_config=_log_config(), access_log=access_log
        )
    finally:
        server.close()


def _log_config() -> dict[str, Any]:
    """Tiled's logging configuration for uvicorn, with uvicorn's and Tiled's start-up lines
    left out (the command announces itself), colours only at a terminal, and ``api_key=``
    query values masked in access lines (the browser URL carries one)."""
    import copy

    from tiled.server.logging_config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"]["masked_keys"] = {"()": MaskedApiKeys}
    config["handlers"]["access"]["filters"].append("masked_keys")
    for logger in ("tiled", "uvicorn.error"):  # Tiled's banner and the links store's URI
        config["loggers"][logger]["level"] = "WARNING"
    for formatter in config["formatters"].values():
        formatter["use_colors"] = None  # colours at a terminal only (Tiled's: always)
    return config


class MaskedApiKeys(logging.Filter):
    """Replace the value of every ``api_key`` query parameter in an access log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            masked = re.sub(r"(?i)(api_key=)[^&#\s]*", r"\1***", args[2])
            record.args = (*args[:2], masked, *args[3:])
        return True
