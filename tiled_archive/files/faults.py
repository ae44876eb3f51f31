"""Named points at which the fault-injection tests kill the process (``kill -9``), to prove
that a crash there loses nothing and that a re-run finishes: set ``TILED_ARCHIVE_KILL_AT`` to
a point's name. Unset (always, outside those tests), a point costs one environment lookup.

The points: ``write:staged`` (an output staged beside its destination, before the rename:
create, pack, extract, download, update), ``write:replaced`` (just after), ``download:file``
(a file fetched into the cache), ``update:compared``, ``load:catalog`` (a new SQLite catalog
written, before it is linked into place), ``load:copied`` (each file copied into the data
folder), ``cache:indexed`` (a fetched file indexed in the download cache, before it is renamed
into it), ``fetch:received`` and ``fetch:placed`` (a lazy archive's file fetched whole, just
before and just after it is renamed into ``data/``)."""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "TILED_ARCHIVE_KILL_AT"


def crash_point(name: str) -> None:
    """Die here, at once and without cleaning up, when ``TILED_ARCHIVE_KILL_AT`` is ``name``."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
