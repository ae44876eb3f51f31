"""``tiled-archive validate``: the one command that runs without the command-line framework.

A fast check of a small archive takes ~0.01 s; Typer's import alone takes ~0.15 s (it imports
pydantic), rich's ~0.05 s. So ``main`` hands a plain ``validate PATH [--fast] [--json]
[--strict] [--complete]`` straight to :func:`validate`, and anything else (``-h``, a typo,
an option Typer must explain) to Typer, whose ``validate`` command calls :func:`validate` too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import output

if TYPE_CHECKING:
    from ..validator import Report

#: The flags of ``validate``, as the Typer command declares them.
FLAGS = {"--fast": "fast", "--json": "as_json", "--strict": "strict", "--complete": "complete"}


def plain_arguments(argv: list[str]) -> dict[str, object] | None:
    """:func:`validate`'s arguments when ``argv`` is ``validate``, one path and known flags only;
    otherwise None (Typer parses it, with its help and errors)."""
    if not argv or argv[0] != "validate":
        return None
    flags = [arg for arg in argv[1:] if arg.startswith("-")]
    paths = [arg for arg in argv[1:] if not arg.startswith("-")]
    if len(paths) != 1 or not set(flags) <= FLAGS.keys():
        return None
    arguments: dict[str, object] = {name: flag in flags for flag, name in FLAGS.items()}
    arguments["path"] = archive_location(paths[0])
    return arguments


def archive_location(text: str) -> Path | str:
    """An archive argument: a URL (http, https, s3) stays text, anything else is a path."""
    from ..sources import is_remote

    return text if is_remote(text) else Path(text)


@output.reports_errors
def validate(
    path: Path | str, *, fast: bool, as_json: bool, strict: bool, complete: bool = False
) -> int:
    """Validate, print the report (a table and a verdict, or JSON), return the exit status:
    0 valid, 1 invalid, 2 could not check."""
    from ..validator import validate as validate_archive

    if isinstance(path, Path) and not path.exists() and not path.is_symlink():
        output.could_not_check(path, "no such file or directory")
    at_terminal = not as_json and sys.stderr.isatty()

    def check() -> Report:
        if not at_terminal:
            return validate_archive(path, fast=fast, strict=strict, complete=complete)
        from ..progress import progress_display

        with progress_display(False, output.err_console()) as progress:
            return validate_archive(
                path, fast=fast, strict=strict, complete=complete, progress=progress
            )

    report = output.check_or_exit(path, check)
    if as_json:
        import json

        sys.stdout.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        from .views import print_report

        print_report(report)
    return report.exit_status()
