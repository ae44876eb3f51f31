"""The Typer app: every command's arguments, then one call into the library and a line said."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..rules.problems import ArchiveError, clip, plural
from . import output
from .output import check_or_exit, reports_errors, say

if TYPE_CHECKING:
    import contextlib

    from ..writer.load import LoadResult

app = typer.Typer(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ARCHIVE_HELP = "A directory or ZIP archive, or a ZIP's http(s) or s3 URL."
Force = Annotated[
    bool, typer.Option("--force", help="Replace DEST if it is an existing tiled-archive.")
]


def _version(value: bool) -> None:
    if value:
        from ..rules.names import FORMAT_VERSION, __version__

        print(f"tiled-archive {__version__} (format {FORMAT_VERSION})")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Write, check and serve tiled-archive archives (offline Tiled data)."""


def _loading(quiet: bool, what: str = "loading Tiled") -> contextlib.AbstractContextManager:
    """A spinner while the command imports Tiled (seconds on a cold start), at a terminal."""
    from ..progress import step

    return step(quiet or not output.err_console().is_terminal, what)


@app.command()
@reports_errors
def create(
    dest: Annotated[Path, typer.Argument(help="Archive to write: *.zip, or a new directory.")],
    sources: Annotated[
        list[Path] | None, typer.Argument(help="Files and folders to archive.")
    ] = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="Archive from this Tiled catalog (and the files it names): an SQLite file, "
            "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DATABASE."
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="With --catalog: only this node (a/b) and its subtree.")
    ] = None,
    reproducible: Annotated[
        bool,
        typer.Option(
            help="Fixed timestamps (SOURCE_DATE_EPOCH, else 1980-01-01): "
            "identical input gives identical bytes."
        ),
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Build an archive from files (registered with Tiled's own machinery) or a Tiled catalog."""
    with _loading(quiet):
        from ..writer import create as create_archive
        from ..writer import create_from_catalog

    if catalog is not None and sources:
        raise typer.BadParameter("give SOURCES or --catalog, not both")
    if catalog is not None:
        create_from_catalog(
            dest, catalog, node=node, reproducible=reproducible, force=force, quiet=quiet
        )
    else:
        create_archive(dest, sources or [], reproducible=reproducible, force=force, quiet=quiet)
    say(f"wrote {dest}")


@app.command()
@reports_errors
def pack(
    source: Annotated[Path, typer.Argument(help="A directory archive.")],
    dest: Annotated[Path, typer.Argument(help="The ZIP to write.")],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Pack a directory archive into a random-access ZIP (streamed, no temporary copy)."""
    with _loading(quiet):
        from ..writer import convert

    if dest.suffix.lower() != ".zip":
        raise ArchiveError("TA-E904", str(dest), "pack writes a ZIP: name it *.zip")
    convert(source, dest, force=force, quiet=quiet)
    say(f"wrote {dest}")


@app.command()
@reports_errors
def extract(
    source: Annotated[str, typer.Argument(help="A ZIP archive, or its http(s) or s3 URL.")],
    dest: Annotated[Path, typer.Argument(help="The directory to create (absent or empty).")],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Extract a ZIP archive into a directory archive that stock `tiled serve catalog` serves."""
    with _loading(quiet):
        from ..writer import convert

    if dest.suffix.lower() == ".zip":
        raise ArchiveError("TA-E904", str(dest), "extract writes a directory: drop the .zip")
    from .validate import archive_location

    convert(archive_location(source), dest, force=force, quiet=quiet)
    _wrote(dest)


@app.command()
@reports_errors
def load(
    archive: Annotated[Path, typer.Argument(help="A directory or ZIP archive.")],
    catalog: Annotated[
        str,
        typer.Argument(
            help="A Tiled catalog: sqlite:///PATH (or a path) or postgresql://USER@HOST/DB; "
            "created by Tiled's init when it does not exist yet."
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", help="The folder the archive's files are copied into.")
    ],
    at: Annotated[
        str, typer.Option("--at", help="The node path to load under (made when missing).")
    ] = "",
    node: Annotated[
        str,
        typer.Option(
            "--node", help="Only this node of the archive (a/b) and its subtree, as the node --at."
        ),
    ] = "",
    quiet: Quiet = False,
) -> None:
    """Load an archive's nodes into a Tiled catalog (SQLite or PostgreSQL) and its files into
    a folder, so that stock `tiled serve catalog CATALOG -r DATA` serves them."""
    with _loading(quiet):
        from ..writer.load import load as load_archive

    try:
        with _loading(quiet, "loading"):
            _loaded(load_archive(archive, catalog, data, at=at, node=node))
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--at") from None


def _loaded(loaded: LoadResult) -> None:
    """Say what a load wrote (a LoadResult), and the stock command that serves it."""
    import shlex

    reused = f", {plural(loaded.reused_files, 'file')} already there" if loaded.reused_files else ""
    where = f"under /{loaded.at}"
    if loaded.node:  # one node of the archive, which became the node at
        where = f"as /{loaded.at} (the archive's {loaded.node})"
    say(
        f"loaded {plural(loaded.nodes, 'node')} and {plural(loaded.files, 'file')}{reused}"
        f" into {loaded.catalog} {where}\n"
        f"serve it with: {shlex.join(loaded.serve_command())}",
        soft_wrap=True,
        markup=False,
    )


def _wrote(dest: Path, what: str = "") -> None:
    """Say what was written; for a directory archive, the stock command that serves it."""
    import shlex

    from ..writer import stock_serve_command

    message = f"wrote {dest}" + (f" ({what})" if what else "")
    if dest.suffix.lower() != ".zip":
        message += f"\nserve it with: {shlex.join(stock_serve_command(dest))}"
    say(message, soft_wrap=True)  # a command to copy: unwrapped


@app.command()
@reports_errors
def relocate(
    directory: Annotated[Path, typer.Argument(help="A directory archive that was moved.")],
) -> None:
    """Point a directory archive's catalog at where the archive is now (after moving it)."""
    from ..writer import relocate as relocate_archive

    relocate_archive(directory)
    say(f"relocated {directory}")


@app.command()
@reports_errors
def serve(
    path: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    public: Annotated[bool, typer.Option("--public", help="Allow anonymous reads.")] = False,
    api_key: Annotated[
        str | None, typer.Option(help="Require this API key (default: a random one, printed).")
    ] = None,
    access_log: Annotated[
        bool, typer.Option(help="Log every request on stdout, as `tiled serve` does.")
    ] = True,
) -> None:
    """Serve an archive over HTTP to Tiled clients and browsers, read-only (Tiled's own app)."""
    import secrets

    from ..serve.http_server import serve as serve_archive

    if not public and api_key is None:
        api_key = secrets.token_hex(16)
    base = f"http://{host}:{port}"
    where = f"{base}/api/v1"

    def ready() -> None:  # once the archive opened: nothing is announced for a bad one
        say(
            f"serving {path} read-only at {where}\n"
            f"navigate a web browser to: {base}/"
            + ("" if public else f"?api_key={api_key}")
            + ("" if public else f"\nconnect with: from_uri('{where}', api_key='{api_key}')")
            + _stock_instead(path),
            soft_wrap=True,
        )

    from .validate import archive_location

    serve_archive(
        archive_location(path),
        host=host,
        port=port,
        public=public,
        api_key=api_key,
        access_log=access_log,
        ready=ready,
    )


def _stock_instead(path: str) -> str:
    """For a local archive: the stock Tiled command that serves it (not `tiled serve catalog
    DIR/`, which stock Tiled takes for the database file itself)."""
    from ..writer import serve_command_for

    if "://" in path:
        return ""
    try:
        return f"\nwith stock Tiled instead: {serve_command_for(path)}"
    except ArchiveError:
        return ""


@app.command()
@reports_errors
def validate(
    path: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    fast: Annotated[
        bool, typer.Option("--fast", help="Sizes and Payload-Oxum only; hash nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (spec/report.schema.json).")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings make it invalid.")] = False,
    complete: Annotated[
        bool,
        typer.Option("--complete", help="A lazy archive's absent files make it invalid."),
    ] = False,
) -> None:
    """Check an archive against every rule of the format and list every problem.

    Exit status: 0 valid (warnings allowed unless --strict), 1 invalid, 2 could not check.
    """
    from .validate import archive_location
    from .validate import validate as run

    location = archive_location(path)
    raise typer.Exit(run(location, fast=fast, as_json=as_json, strict=strict, complete=complete))


@app.command()
@reports_errors
def info(
    path: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
    every_node: Annotated[
        bool, typer.Option("--all", help="List every node (default: 20 per container).")
    ] = False,
) -> None:
    """Show what an archive holds: format, producer, provenance, sizes and the node tree.

    Reads the manifest and the catalog only; `tiled-archive validate` checks the bytes.
    """
    import json
    import sys

    from ..reader.info import describe, print_info
    from .validate import archive_location

    described = describe(archive_location(path))
    if as_json:
        sys.stdout.write(json.dumps(described.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_info(described, output.console(), every_node=every_node)


@app.command()
def conformance(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Conformance fixture trees (e.g. conformance/fixtures) or archives."),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the fixture runs as JSON (fixture trees).")
    ] = False,
) -> None:
    """Run the validator on conformance fixtures, comparing codes exactly, or on archives.

    Exit status: 0 when every fixture gives exactly its expected codes and every archive is
    valid, 1 otherwise, 2 when something could not be checked.
    """
    from ..validator import fixture_cases, is_fixture_tree, run_cases
    from ..validator import validate as validate_archive
    from .views import print_conformance, verdict

    console = output.console()
    failed = 0
    for path in paths:
        if is_fixture_tree(path):
            results = run_cases(fixture_cases(path))  # lazy: runs inside print_conformance
            failed += check_or_exit(
                path, functools.partial(print_conformance, results, console, as_json=as_json)
            )
        else:
            report = check_or_exit(path, functools.partial(validate_archive, path))
            console.print(verdict(report), highlight=False)
            failed += report.exit_status()
    raise typer.Exit(1 if failed else 0)


@app.command()
@reports_errors
def download(
    uri: Annotated[str, typer.Argument(help="The Tiled server, e.g. http://host:8000/api/v1.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Archive to write: *.zip, or a new directory."),
    ] = None,
    path: Annotated[
        str | None, typer.Argument(help="The node to download (a/b); default: everything.")
    ] = None,
    search: Annotated[
        list[str] | None,
        typer.Option(
            help="Only children whose metadata KEY equals VALUE (KEY=VALUE; VALUE read as JSON "
            "when it is JSON, else text). Repeat to narrow further."
        ),
    ] = None,
    fulltext: Annotated[
        str | None, typer.Option(help="Only children whose metadata holds this text.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key for the server (else TILED_API_KEY, or none).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel transfers.")] = 4,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Download cache (default: the user cache, .../blobs).")
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty", help="Write an archive even when nothing matched (parents only)."
        ),
    ] = False,
    keep_cache: Annotated[
        bool,
        typer.Option(help="Keep the downloaded files in the cache (a ZIP then costs twice)."),
    ] = True,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="Instead of -o: download into this Tiled catalog (SQLite or PostgreSQL URI), "
            "as `load` does; needs --data."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="With --catalog: the folder for the files.")
    ] = None,
    at: Annotated[
        str, typer.Option("--at", help="With --catalog: the node path to load under.")
    ] = "",
    lazy: Annotated[
        bool,
        typer.Option(
            "--lazy",
            help="Write a lazy directory archive: catalog and manifest now, each file fetched "
            "when first read (or by `tiled-archive fetch`).",
        ),
    ] = False,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="With --lazy: ask every file's validators now (one request each), so a file "
            "changed at the server before it is read is refused even at the same size.",
        ),
    ] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Download a node of a live Tiled server, with its parents, into an archive (or straight
    into a Tiled catalog: --catalog, --data).

    Exact bytes through Tiled's raw-asset endpoints; what the server will not hand out raw is
    read through the data API (listed in the manifest's fallbacks). Re-running an interrupted
    download fetches only what is missing. Exit status 1 lists what could not be fetched.
    """
    import json

    with _loading(quiet):
        from rich.filesize import decimal

        from ..downloader import download as download_archive
        from ..downloader import open_node
        from ..writer import check_destination

    pairs = []
    for item in search or []:
        key, equals, text = item.partition("=")
        if not equals:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--search")
        try:
            pairs.append((key, json.loads(text)))
        except json.JSONDecodeError:
            pairs.append((key, text))
    if (output is None) == (catalog is None) or (catalog is None) != (data is None):
        raise typer.BadParameter("give --output, or --catalog and --data")
    if lazy and (output is None or output.suffix.lower() == ".zip"):
        raise typer.BadParameter("a lazy archive is a directory: --output without .zip")
    if output is not None:
        check_destination(output.absolute(), force=force)  # before connecting: fail at once
    with _loading(quiet, f"connecting to {uri}"):
        source = open_node(uri, path, api_key=api_key, search=pairs, fulltext=fulltext)
    options = {"workers": workers, "cache_dir": cache_dir, "quiet": quiet}
    options["keep_cache"] = keep_cache
    if catalog is not None:
        from ..downloader import download_into

        _loaded(download_into(source, catalog, data, at=at, allow_empty=allow_empty, **options))
        return
    done = download_archive(
        source, output, force=force, allow_empty=allow_empty, lazy=lazy, probe=probe, **options
    )
    what = f"{plural(done.nodes, 'node')}, {decimal(done.fetched_bytes)} fetched"
    if done.reused_bytes:
        what += f", {decimal(done.reused_bytes)} from the cache"
    say(f"wrote {output} ({what})\nserve it with stock Tiled: {done.serve_command}", soft_wrap=True)


Nodes = Annotated[
    list[str] | None,
    typer.Option("--node", help="Only this node (a/b) and the nodes below it; repeatable."),
]


@app.command()
@reports_errors
def fetch(
    directory: Annotated[Path, typer.Argument(help="A lazy directory archive.")],
    node: Nodes = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key for the origin (else TILED_API_KEY, or none).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel transfers.")] = 4,
    quiet: Quiet = False,
) -> None:
    """Bring a lazy archive's absent files from the server it came from (all, or --node's),
    each checked; resumable. Once none is absent, the archive is complete and sealed."""
    from rich.filesize import decimal

    from ..writer.lazy import fetch as fetch_files

    done = fetch_files(directory, node or [], api_key=api_key, workers=workers, quiet=quiet)
    state = (
        f"{plural(done.absent, 'file')} still absent"
        if done.absent
        else "complete" + (", digests sealed" if done.sealed else "")
    )
    say(f"fetched {plural(done.files, 'file')} ({decimal(done.bytes)}) into {directory}: {state}")


@app.command()
@reports_errors
def clean(
    folders: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders to clean (default: the current one); $TMPDIR always."),
    ] = None,
) -> None:
    """Remove what runs of tiled-archive that were stopped (killed) left behind: partial
    outputs beside their destinations, partial copies, scratch folders. Only ours, of this
    machine, whose process is gone; every run also removes those in the folders it writes."""
    import warnings

    from ..files.work import StaleWorkRemoved
    from ..files.work import clean as clean_folders

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StaleWorkRemoved)
        removed = clean_folders(folders or [Path.cwd()])
    for path in removed:
        say(f"removed {path}")
    say(f"removed {plural(len(removed), 'stale work item')} of stopped runs")


@app.command()
@reports_errors
def drop(
    directory: Annotated[Path, typer.Argument(help="A lazy directory archive.")],
    node: Nodes = None,
) -> None:
    """Free a lazy archive's fetched files again (all, or --node's): they are fetched when
    next read. Files read through the data API at download stay."""
    from rich.filesize import decimal

    from ..writer.lazy import drop as drop_files

    say(f"freed {decimal(drop_files(directory, node or []))} in {directory}")


@app.command()
@reports_errors
def update(
    archive: Annotated[Path, typer.Argument(help="An archive `download` wrote (ZIP or folder).")],
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key for the server (else TILED_API_KEY, sent only for an archive "
            "downloaded here)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Say what changed at the server; write nothing and fetch no file (nodes "
            "only the data API reads are read again to compare).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as JSON on stdout.")] = False,
    workers: Annotated[int, typer.Option(help="Parallel transfers.")] = 4,
    quiet: Quiet = False,
) -> None:
    """Bring a downloaded archive up to date with the server node it came from.

    Names each node added, removed or changed (metadata, specs, structure, data); fetches only
    the files the server changed, and puts the new archive in place in one step (an
    interruption leaves the old one as it was). The manifest's history records each update.
    """
    import json

    with _loading(quiet):
        from ..downloader.update import update as update_archive

    done = update_archive(
        archive, api_key=api_key, dry_run=dry_run, workers=workers, quiet=quiet or as_json
    )
    if as_json:
        print(json.dumps(done.to_json(), indent=2))
    else:
        say(str(done), markup=False, soft_wrap=True)


@app.command()
def diff(
    before: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    after: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="The differences as JSON.")] = False,
) -> None:
    """Nodes added (+), removed (-) and changed (~: metadata keys, specs, structure, data by
    digest) from archive BEFORE to AFTER, in any forms. Exit status 0: the same; 1: they
    differ; 2: an archive could not be read."""
    import json

    from rich.markup import escape

    from ..reader.diff import diff_archives

    try:
        found = diff_archives(before, after)
    except ArchiveError as err:
        say(f"[bold red]error[/] {escape(str(err))}")
        raise SystemExit(2) from None
    except Exception as err:  # not "they differ" (1): no verdict at all
        output.could_not_check(f"{before} {after}", f"{type(err).__name__}: {err}")
    if as_json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        for line in found.lines():
            print(clip(line, 2000))  # node and metadata keys come from the archives
        say(found.summary(), markup=False)
    raise SystemExit(0 if found.same else 1)
