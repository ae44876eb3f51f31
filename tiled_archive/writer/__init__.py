"""Write archives: from files (through Tiled's registration), and between directory and ZIP form.

Every writer builds under a temporary name beside the destination and renames at the end, so an
interrupted run never leaves anything at the destination. Payload bytes are copied unchanged and
hashed once on the way; the manifest and BagIt files are written last, from those hashes.

Modules, in the order data flows: ``common`` (payload files, staging, manifest and tag files),
``forms`` (directory and ZIP output), ``create`` (from files or a catalog), ``convert`` (the
other form, relocation, resealing), ``lazy`` (fetching, dropping and sealing an incomplete
archive's files; imported on its own: it needs the reader).
"""

from __future__ import annotations

from ..files.hashing import CHUNK, copy_hashing
from .common import DOS_EPOCH, PayloadFile, check_destination, recover_beside
from .convert import convert, relocate, reseal, serve_command_for, stock_serve_command
from .create import catalog_payload, create, create_from_catalog, write_new
from .forms import StreamedArchive, streamed_archive, write_archive

__all__ = [
    "recover_beside",
    "StreamedArchive",
    "CHUNK",
    "DOS_EPOCH",
    "PayloadFile",
    "catalog_payload",
    "check_destination",
    "convert",
    "copy_hashing",
    "create",
    "create_from_catalog",
    "relocate",
    "reseal",
    "serve_command_for",
    "stock_serve_command",
    "streamed_archive",
    "write_archive",
    "write_new",
]
