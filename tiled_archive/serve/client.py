"""The public in-process entry points: :func:`open` (an archive) and :func:`from_catalog`
(any Tiled catalog), each returning the normal Tiled client over :mod:`.transport`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..reader import FetchOptions, open_archive
from .app import ArchiveServer, CatalogServer
from .quiet import quiet_tiled
from .transport import in_process_context


def open(  # noqa: A001 -- the public name
    path: str | Path,
    *,
    storage_options: Mapping[str, Any] | None = None,
    fetch: bool | None = None,
    offline: bool | None = None,
    api_key: str | None = None,
    max_bytes: int | None = None,
    **client_kwargs: Any,
) -> Any:
    """Open an archive (directory or ZIP, or a ZIP at an http(s) URL, read by range requests)
    as a Tiled client, served in-process (no socket).

    Returns the root container of the normal Tiled client, which here is also a context manager
    and has ``close()``: both release the archive. Keyword arguments go to
    ``tiled.client.from_context`` (e.g. ``structure_clients="numpy"``). ``storage_options``
    for a URL: ``headers`` (e.g. ``Authorization``), ``timeout``, ``verify``.

    An incomplete (lazy) archive (``download(..., lazy=True)``) serves what it holds and
    fetches what a read needs from the server it came from (only the blocks of a large file a
    read touches), checked and kept. It fetches only when this user's download made it, or
    with ``fetch=True``; never with ``offline=True`` (or ``TILED_ARCHIVE_OFFLINE=1``), where a
    read of absent bytes fails with TA-E941 naming the ``tiled-archive fetch`` command that
    would bring them. ``api_key`` (default ``TILED_API_KEY``) goes to that server only;
    ``max_bytes`` caps the fetched bytes kept, least recently used dropped first.
    """
    options = FetchOptions(fetch, offline, api_key, max_bytes)
    return in_process_client(
        lambda: ArchiveServer(open_archive(path, storage_options, options)), client_kwargs
    )


def from_catalog(
    uri: str | Path, readable_storage: Iterable[str | Path] = (), **client_kwargs: Any
) -> Any:
    """Open a Tiled catalog (``sqlite:///PATH`` or a path, ``postgresql://...``) as a Tiled
    client, served in-process and read-only, as :func:`open` serves an archive; its assets are
    read only inside the ``readable_storage`` folders."""
    return in_process_client(lambda: CatalogServer(uri, readable_storage), client_kwargs)


def in_process_client(make_server: Callable[[], Any], client_kwargs: dict[str, Any]) -> Any:
    """The Tiled client of the server ``make_server`` builds (its ``app``, served in-process),
    closable: closing it stops the event loop and closes the server."""
    from tiled.client import from_context

    stack = contextlib.ExitStack()
    try:
        with quiet_tiled():
            server = make_server()
            stack.callback(server.close)
            context = stack.enter_context(in_process_context(server.app, None))
            client = from_context(context, **client_kwargs)
    except BaseException:
        stack.close()
        raise
    client.__class__ = _closable(type(client))
    client._tiled_archive_close = stack.close
    # The event loop runs in a non-daemon thread, which the interpreter joins at exit before
    # atexit handlers run: close at that earlier point (as Tiled's Context does) so a client
    # nobody closed does not hang the exit.
    threading._register_atexit(stack.close)
    return client


#: Each Tiled client class, with ``close()`` and context management added (made once).
_CLOSABLE: dict[type, type] = {}


def _closable(cls: type) -> type:
    """``cls`` plus ``close()`` and context management that release the archive."""
    if cls not in _CLOSABLE:

        def close(self: Any) -> None:
            self._tiled_archive_close()

        def exit_(self: Any, *exc_info: object) -> None:
            self._tiled_archive_close()

        _CLOSABLE[cls] = type(
            cls.__name__,
            (cls,),
            {
                "close": close,
                "__enter__": lambda self: self,
                "__exit__": exit_,
                "__module__": cls.__module__,
            },
        )
    return _CLOSABLE[cls]
