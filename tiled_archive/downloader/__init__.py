"""Download from a live Tiled server into an archive: ``tiled_archive.download(node, dest)``.

The bytes that back the server are fetched unchanged through Tiled's raw-asset endpoints
(``/asset/manifest`` lists a directory asset such as a Zarr store, ``/asset/bytes`` serves one
file), in parallel, into a local content-addressed cache (:class:`BlobCache`). An interrupted
download resumes from it (a half-fetched file with an HTTP range request), and what was fetched
once, for any archive, is not fetched again. The catalog subtree is then rebuilt by Tiled itself:
a fresh catalog served in-process, each node recreated through the Tiled client with data
sources pointing at the downloaded files, and the archive written by
:func:`tiled_archive.writer.write_new`, atomically, streaming from the cache.

What the server will not hand out raw (raw assets disabled, assets that are not files such as
SQL tables, nodes without a data source of their own) is read through the data API and written
as Zarr (arrays) or Parquet (tables); the manifest's ``fallbacks`` lists those nodes. A node
that cannot be fetched either way stops the run with TA-E910 naming it, and nothing is written.

This package holds :func:`download` and :func:`open_node` and runs the steps of one download
in order (:func:`_fetch`), each step reading and adding to one :class:`~.state.Run`. Each module
imports only those above it in this list:

- :mod:`.cache`: the content-addressed cache (``Blob``, ``BlobCache``, ``default_cache_dir``);
- :mod:`.state`: the run's shared state (``Run``), the node model (``Node``, ``ServerFile``) and
  the asset helpers every step uses;
- :mod:`.transfer`: HTTP (status checks, retries with backoff, the exceptions that steer them),
  the parallel runner and its cancellation, fetching raw files into the cache, the progress
  display;
- :mod:`.plan`: walking the server's tree, directory-asset listings, archive paths of raw files;
- :mod:`.fallback`: what is read through the data API (Zarr, Parquet) and where it goes;
- :mod:`.rebuild`: the archive's data sources, the catalog rebuilt through Tiled, the manifest's
  ``fallbacks``;
- :mod:`.streamed`: through a server's archive route, only the members the cache lacks;
- :mod:`.result`: what a download did (``DownloadResult``).
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..files.blobs import DEFAULT_CACHE_MAX_BYTES, Blob, BlobCache, default_cache_dir
from ..files.work import work_folder
from ..progress import progress_display
from ..reader.fetching import trust
from ..rules.manifest import FileEntry
from ..rules.names import CATALOG_NAME
from ..rules.problems import ArchiveError
from ..writer import PayloadFile, check_destination, serve_command_for, write_new
from .fallback import SLAB_BYTES, fetch_fallbacks
from .plan import assign_members, list_directories, plan
from .previous import Previous, reuse_unchanged
from .rebuild import (
    archive_raw_sources,
    fetch_record,
    manifest_fields,
    member_of_uri,
    rebuild_catalog,
    source_fields,
)
from .result import DownloadResult
from .state import FileHook, Run, node_path
from .streamed import fetch_routed
from .transfer import fetch_raw, probe_raw

if TYPE_CHECKING:
    from ..writer.load import LoadResult

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_RETRIES",
    "DEFAULT_WORKERS",
    "SLAB_BYTES",
    "Blob",
    "BlobCache",
    "DownloadResult",
    "default_cache_dir",
    "default_destination",
    "download",
    "open_node",
]

DEFAULT_WORKERS = 4
DEFAULT_RETRIES = 5


# -- One run -------------------------------------------------------------------------------------


def _fetch(run: Run, *, allow_empty: bool, lazy: bool = False, probe: bool = False) -> None:
    """Everything the archive holds, into the cache and the staging folder; TA-E910 listing
    every node that could be fetched neither raw nor through the data API, TA-E913 when
    there is no node to fetch (unless ``allow_empty``). ``lazy``: raw files are not fetched,
    only their sizes and validators asked for where the server did not list a size (with
    ``probe``, for every file)."""
    plan(run)
    if not run.matched and not allow_empty:
        where = "/".join(node_path(run.source)) or "/"
        what = "the search matched" if getattr(run.source, "_queries", None) else "it holds"
        raise ArchiveError(
            "TA-E913", f"{run.base_url} {where}", f"no node to download: {what} no node"
        )
    list_directories(run)
    assign_members(run)
    if lazy:
        probe_raw(run, every_file=probe)
        reuse_unchanged(run)
    else:
        fetch_raw(run)
    fetch_fallbacks(run)
    failures = [f"{node.name}: {node.error}" for node in run.nodes if node.error]
    if failures:
        raise ArchiveError(
            "TA-E910",
            run.base_url,
            f"{len(failures)} node(s) could not be fetched, nothing was written:\n  "
            + "\n  ".join(failures),
        )
    archive_raw_sources(run)


# -- Public API --------------------------------------------------------------------------------


def download_into(
    source: Any, catalog: str, data_dir: str | Path, *, at: str = "", **options: Any
) -> LoadResult:
    """Download ``source`` into the Tiled catalog ``catalog`` (SQLite or PostgreSQL) under node
    path ``at`` (the node itself becomes the node at ``at``; a server root's children go
    below it), its files into ``data_dir``; ``options`` as :func:`download` takes them. The
    archive is staged in a temporary folder beside ``data_dir`` (removed after), then loaded
    by :func:`tiled_archive.writer.load.load`: its checks, codes and all-or-nothing rule apply."""
    return _download_into(source, catalog, data_dir, at=at, **options)[1]


def _download_into(
    source: Any, catalog: str, data_dir: str | Path, *, at: str, **options: Any
) -> tuple[DownloadResult, LoadResult]:
    from ..writer.load import load

    data_dir = Path(data_dir).absolute()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with work_folder(data_dir.parent, ".tiled-archive-") as work:
        staged = download(source, Path(work, "archive"), **options)
        # With ``at``, the downloaded node itself lands there (not its server path below it).
        node = "/".join(node_path(source)) if at else ""
        loaded = load(staged, catalog, data_dir, at=at, node=node)
    result = dataclasses.replace(
        staged, path=data_dir, nodes=loaded.nodes, serve_command=shlex.join(loaded.serve_command())
    )
    return result, loaded


def download(
    source: Any,
    dest: str | Path | None = None,
    *,
    catalog: str | None = None,
    data_dir: str | Path | None = None,
    at: str = "",
    workers: int = DEFAULT_WORKERS,
    quiet: bool = True,
    force: bool = False,
    cache_dir: str | Path | None = None,
    cache_max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES,
    retries: int = DEFAULT_RETRIES,
    on_file: FileHook | None = None,
    allow_empty: bool = False,
    streamed: bool = True,
    keep_cache: bool = True,
    lazy: bool = False,
    probe: bool = False,
) -> DownloadResult:
    """Download a node of a live Tiled server into an archive at ``dest`` (``*.zip`` for a ZIP,
    else a directory) and say what was done: a :class:`DownloadResult` (a path: ``open()``
    takes it) with the node count, the bytes fetched and those the cache already held, and the
    shell command that serves the archive with stock Tiled.

    ``source`` is a Tiled client node: a container, a search result (``client.search(...)``:
    its matching children) or a single array or table. The archive holds it in full, below its
    parent containers (with their metadata), under the server's keys. Its ``data/`` holds the
    bytes that back the server, fetched through Tiled's raw-asset endpoints with ``workers``
    threads; what the server will not hand out raw is read through the data API (arrays as
    Zarr, tables as Parquet) and listed in the manifest's ``fallbacks``.

    Fetched files are kept in a content-addressed cache (``cache_dir``, default
    :func:`default_cache_dir`; trimmed to ``cache_max_bytes``, least recently used first, after
    the run; None: no limit), so a re-run after an interruption fetches only what is missing or
    damaged, and data fetched for another archive is not fetched again; with ``keep_cache``
    False, this download's files leave the cache once the archive is written. Connection errors and
    5xx answers are retried ``retries`` times with backoff. ``on_file(path, size)`` is called
    as each payload file is ready; an exception it raises stops the download. A source with
    no node to download (an empty container at the root, a search that matched nothing) is
    refused unless ``allow_empty``; then the archive holds the parents alone, and validates.

    When the server has the archive route (``tiled_archive.serve.router:router``) and ``streamed``
    (the default), the archive the route makes is used instead (its access rules and search
    apply): its tail is read first, and only the members the cache lacks are fetched, with
    range requests (:mod:`.streamed`), each checked against the manifest's digest.

    With ``lazy``, ``dest`` is an incomplete directory archive (spec 4.1): its catalog,
    manifest (sizes; digests where the server gives them) and tag files, and no payload bytes
    (what only the data API can read is fetched now). Opening it (:func:`tiled_archive.open`)
    fetches what each read needs from this server, checked and kept; ``tiled-archive fetch``
    brings the rest. This user's own lazy archives fetch without being told to. Each file's
    validators are recorded from one request for its first byte where the server lists no
    size (it must be asked anyway), and with ``probe`` for every file: a file rewritten at the
    server between now and its first read is then refused (TA-E942), even at the same size,
    at the cost of a request per file now (stock Tiled answers about 40 a second).

    A directory archive is written relocated (its asset URIs point at its own ``data/``), so
    stock ``tiled serve catalog DEST/catalog.db -r DEST/data`` serves it as it is.

    With ``catalog`` (``postgresql://…`` or an SQLite catalog) and ``data_dir`` instead of
    ``dest``, the download goes straight into that Tiled catalog under node path ``at``, its
    files into ``data_dir`` (the result's ``path``): the archive is staged in a temporary
    folder beside ``data_dir``, then loaded (:func:`tiled_archive.writer.load.load`, whose rules and
    codes apply: one transaction, nothing left behind on failure).

    Raises ArchiveError: TA-E903 (``dest`` exists; ``force`` replaces an archive), TA-E910
    (nodes that could not be fetched, listed), TA-E911 (the server could not be reached or kept
    failing), TA-E913 (nothing to download). Nothing is written at ``dest`` unless the whole
    download succeeds.
    """
    if (catalog is None) == (dest is None) or (catalog is None) != (data_dir is None):
        raise TypeError("download() takes dest, or catalog and data_dir")
    if lazy and (catalog is not None or str(dest).lower().endswith(".zip")):
        raise ValueError("a lazy archive is a directory: give dest a name without .zip")
    if catalog is not None:
        options = {"workers": workers, "quiet": quiet, "cache_dir": cache_dir}
        options |= {"retries": retries, "cache_max_bytes": cache_max_bytes}
        options |= {"on_file": on_file, "allow_empty": allow_empty, "keep_cache": keep_cache}
        return _download_into(source, catalog, data_dir, at=at, **options)[0]  # type: ignore[arg-type]
    return _download_archive(
        source,
        Path(dest),  # type: ignore[arg-type]
        Settings(workers, quiet, cache_dir, cache_max_bytes, retries, on_file, keep_cache),
        force=force,
        allow_empty=allow_empty,
        streamed=streamed,
        lazy=lazy,
        probe=probe,
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a download runs (:func:`download` documents each)."""

    workers: int = DEFAULT_WORKERS
    quiet: bool = True
    cache_dir: str | Path | None = None
    cache_max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES
    retries: int = DEFAULT_RETRIES
    on_file: FileHook | None = None
    keep_cache: bool = True


@dataclasses.dataclass
class Staged:
    """A download fetched and its catalog built, not written yet: what :func:`download`
    passes to ``write_new``, and what an update compares with the archive it replaces."""

    run: Run
    catalog: Path
    #: Top-level manifest fields (provenance, root, fallbacks, fetch; an update adds history).
    fields: dict[str, Any]
    #: The archive path of each of the catalog's asset URIs.
    member_of: Callable[[str], str]
    #: A lazy download's absent files.
    absent: list[FileEntry]
    #: Whether the server's archive route sent it.
    routed: bool = False

    def payload(self) -> list[PayloadFile]:
        """The archive's payload. Digests and CRC-32s are known (fetched, verified from the
        cache or the archive an update replaces): a ZIP is written without a hashing pass,
        and a directory hard-links the files."""
        run = self.run
        fetched = [
            PayloadFile(
                member,
                blob.size,
                functools.partial(open, blob.path, "rb"),
                blob.mtime,
                blob.sha256,
                crc32=blob.crc32,
                local_path=blob.path,
            )
            for member, blob in run.ready.items()
        ]
        return sorted([*fetched, *run.reused.values()], key=lambda file: file.path)


def _download_archive(
    source: Any,
    dest: Path,
    settings: Settings,
    *,
    force: bool,
    allow_empty: bool = False,
    streamed: bool = True,
    lazy: bool = False,
    probe: bool = False,
    previous: Previous | None = None,
    before_write: Callable[[Staged], bool] | None = None,
) -> DownloadResult:
    """:func:`download` into the archive ``dest``; with ``previous`` (the archive an update
    replaces), its files that the server still names are not fetched again, and
    ``before_write`` sees what was staged and says whether to write it."""
    check_destination(dest.absolute(), force=force)
    cache = BlobCache(
        Path(settings.cache_dir) if settings.cache_dir else default_cache_dir(),
        settings.cache_max_bytes,
    )
    run: Run | None = None
    finished = False
    try:
        with work_folder() as work:
            with progress_display(settings.quiet) as progress:
                run = Run(
                    source,
                    cache,
                    Path(work, "staging"),
                    progress,
                    workers=settings.workers,
                    retries=settings.retries,
                    on_file=settings.on_file,
                    previous=previous,
                )
                staged = _stage(
                    run,
                    Path(work),
                    streamed=streamed and not lazy,
                    lazy=lazy,
                    probe=probe,
                    allow_empty=allow_empty,
                )
            written = before_write is None or before_write(staged)
            if written:
                # Outside the display above: the writer shows its own, and rich allows one
                # at once.
                write_new(
                    dest,
                    staged.payload(),
                    staged.catalog,
                    lambda row: staged.member_of(row.data_uri),
                    epoch=None,
                    force=force,
                    quiet=settings.quiet,
                    extra=staged.fields,
                    relocated=True,
                    absent=staged.absent,
                )
        if written and previous is None:  # an update keeps the trust it had
            # This user's download: a lazy one fetches without being told to, and an update
            # may send this user's TILED_API_KEY to the server it names (update.py).
            trust(dest, staged.fields["provenance"]["server"])
            if lazy:
                trust(dest, staged.fields["fetch"]["origin"])
        finished = True
        return _result(dest, run, streamed=staged.routed, written=written)
    finally:
        # A failed run keeps what it fetched, whatever the limit, so a re-run can resume.
        fetched = {blob.sha256 for blob in run.ready.values()} if run else set()
        if finished and not settings.keep_cache:
            for sha256 in fetched:
                cache.forget(sha256)
        cache.evict(keep=() if finished else fetched)
        cache.close()


def _stage(
    run: Run, work: Path, *, streamed: bool, lazy: bool, probe: bool, allow_empty: bool
) -> Staged:
    """Fetch what the archive holds (through the server's archive route when ``streamed`` and
    it has one) and build its catalog in ``work``."""
    db = fetch_routed(run) if streamed else None
    if db is not None:
        return Staged(run, db, source_fields(run.source), str, [], routed=True)
    _fetch(run, allow_empty=allow_empty, lazy=lazy, probe=probe)
    db = work / CATALOG_NAME
    rebuild_catalog(run, db)
    fields = manifest_fields(run)
    absent, fields["fetch"] = fetch_record(run, lazy=lazy)
    absent = [entry for entry in absent if entry.path not in run.reused]
    return Staged(run, db, fields, functools.partial(member_of_uri, run.staging), absent)


def default_destination(source: Any) -> Path:
    """Where ``download(source)`` puts an archive when given no destination: a directory
    under the cache root named by the server and the node (a search result: its queries'
    digest too), the same for the same node every time."""
    from ..files.cache_root import named_folder

    server = source_fields(source)["provenance"]["server"]
    parts = node_path(source)
    queries = repr(getattr(source, "_queries", None) or "")
    return named_folder("downloads", [server, *parts], f"{server}\0{'/'.join(parts)}\0{queries}")


def _result(dest: Path, run: Run, *, streamed: bool, written: bool = True) -> DownloadResult:
    from ..reader import open_archive

    nodes = 0
    if written:
        with open_archive(dest) as archive:
            nodes = archive.node_count()
    return DownloadResult(
        dest,
        nodes,
        run.fetched_bytes,
        run.cached_bytes + run.reused_bytes,
        run.revalidated,
        streamed,
        serve_command_for(dest),
    )


def open_node(
    uri: str,
    path: str | None = None,
    *,
    api_key: str | None = None,
    search: Iterable[tuple[str, Any]] = (),
    fulltext: str | None = None,
) -> Any:
    """The Tiled node to download: the server at ``uri``, the node at ``path`` below it, and
    the children matching every ``search`` pair (metadata key equals value) and ``fulltext``.

    Raises ArchiveError TA-E911 when the server cannot be reached, TA-E914 when it wants an API
    key (none, or not this one), TA-E900 when the node does not exist or a search is asked of
    a node that is not a container.
    """
    from tiled.client import from_uri
    from tiled.queries import FullText, Key

    _connectable(uri)
    try:
        node = from_uri(uri, api_key=api_key)
        if path and path.strip("/"):
            node = node[path.strip("/")]
    except httpx.HTTPStatusError as err:
        if err.response.status_code in (401, 403):
            raise ArchiveError(
                "TA-E914", uri, f"the server refused the API key ({err.response.status_code})"
            ) from None
        raise ArchiveError("TA-E911", uri, f"the server answered {err}") from None
    except httpx.HTTPError as err:
        raise ArchiveError("TA-E911", uri, f"cannot reach the server: {err}") from None
    except RuntimeError as err:  # Tiled's client, on a server that needs a key: no HTTP error
        if "requires API key" not in str(err):
            raise
        message = "the server requires an API key; none was given"
        raise ArchiveError("TA-E914", uri, message) from None
    except KeyError:
        raise ArchiveError("TA-E900", path, "no such node on the server") from None
    queries = [Key(key) == value for key, value in search]
    if fulltext:
        queries.append(FullText(fulltext))
    if queries and not hasattr(node, "search"):
        raise ArchiveError("TA-E900", path, "only a container can be searched")
    for query in queries:
        node = node.search(query)
    return node


#: How long a first connection may take before Tiled's client, with its retries, is left to it.
CONNECT_SECONDS = 2.0


def _connectable(uri: str) -> None:
    """TA-E911 at once when nothing can be connected to at ``uri``: a refused connection or a
    host name that does not resolve is not retried (Tiled's client retries both for ~25 s).
    Anything else (a slow answer, a 5xx) is left to the client and its retries."""
    try:
        with httpx.Client(timeout=httpx.Timeout(CONNECT_SECONDS)) as client:
            client.head(uri)
    except httpx.ConnectError as err:
        raise ArchiveError(
            "TA-E911", uri, f"cannot connect: {err}", "Check the URL and that the server is up."
        ) from None
    except httpx.HTTPError:
        pass
