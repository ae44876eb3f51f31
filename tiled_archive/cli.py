"""The ``tiled-archive`` command: thin wrappers that parse arguments, call one function, print."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from .format import ArchiveError

app = typer.Typer(
    help="Write, check and serve tiled-archive archives (offline Tiled data).",
    no_args_is_help=True,
    add_completion=False,
)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., object])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Force = Annotated[
    bool, typer.Option("--force", help="Replace DEST if it is an existing tiled-archive.")
]


def reports_errors(command: F) -> F:
    """Turn an ArchiveError into its coded message and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except ArchiveError as err:
            err_console.print(f"[bold red]error[/] {err}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@reports_errors
def create(
    dest: Annotated[Path, typer.Argument(help="Archive to write: *.zip, or a new directory.")],
    sources: Annotated[
        list[Path] | None, typer.Argument(help="Files and folders to archive.")
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(help="Archive from this Tiled SQLite catalog (and the files it names)."),
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
    from .writer import create as create_archive
    from .writer import create_from_catalog

    if catalog is not None and sources:
        raise typer.BadParameter("give SOURCES or --catalog, not both")
    if catalog is not None:
        create_from_catalog(
            dest, catalog, node=node, reproducible=reproducible, force=force, quiet=quiet
        )
    else:
        create_archive(dest, sources or [], reproducible=reproducible, force=force, quiet=quiet)
    err_console.print(f"wrote {dest}", highlight=False)


@app.command()
@reports_errors
def pack(
    source: Annotated[Path, typer.Argument(help="A directory archive.")],
    dest: Annotated[Path, typer.Argument(help="The ZIP to write.")],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Pack a directory archive into a random-access ZIP (streamed, no temporary copy)."""
    from .writer import convert

    if dest.suffix.lower() != ".zip":
        raise ArchiveError("TA-E904", str(dest), "pack writes a ZIP: name it *.zip")
    convert(source, dest, force=force, quiet=quiet)
    err_console.print(f"wrote {dest}", highlight=False)


@app.command()
@reports_errors
def extract(
    source: Annotated[Path, typer.Argument(help="A ZIP archive.")],
    dest: Annotated[Path, typer.Argument(help="The directory to create (absent or empty).")],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Extract a ZIP archive into a directory archive that stock `tiled serve catalog` serves."""
    from .writer import convert

    if dest.suffix.lower() == ".zip":
        raise ArchiveError("TA-E904", str(dest), "extract writes a directory: drop the .zip")
    convert(source, dest, force=force, quiet=quiet)
    data = dest / "data"
    err_console.print(
        f"wrote {dest}\nserve it with: tiled serve catalog {dest / 'catalog.db'} -r {data} "
        "--public",
        highlight=False,
    )


@app.command()
@reports_errors
def relocate(
    directory: Annotated[Path, typer.Argument(help="A directory archive that was moved.")],
) -> None:
    """Point a directory archive's catalog at where the archive is now (after moving it)."""
    from .writer import relocate as relocate_archive

    relocate_archive(directory)
    err_console.print(f"relocated {directory}", highlight=False)


@app.command()
@reports_errors
def serve(
    path: Annotated[Path, typer.Argument(help="A directory or ZIP archive.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    public: Annotated[bool, typer.Option("--public", help="Allow anonymous reads.")] = False,
    api_key: Annotated[
        str | None, typer.Option(help="Require this API key (default: a random one, printed).")
    ] = None,
) -> None:
    """Serve an archive over HTTP to Tiled clients, read-only (Tiled's own app)."""
    import secrets

    from .asgi import serve as serve_archive

    if not public and api_key is None:
        api_key = secrets.token_hex(16)
    where = f"http://{host}:{port}/api/v1"
    err_console.print(
        f"serving {path} read-only at {where}"
        + ("" if public else f"\nconnect with: from_uri('{where}', api_key='{api_key}')"),
        highlight=False,
    )
    serve_archive(path, host=host, port=port, public=public, api_key=api_key)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
