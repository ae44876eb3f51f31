"""The ``tiled-archive`` command: thin wrappers that parse arguments, call one function, print.

``commands`` is the Typer app; ``validate`` the check, which ``main`` runs without loading
Typer when its arguments are plain; ``output`` and ``views`` what commands print.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run the command ``argv`` (default: ``sys.argv[1:]``) and exit with its status."""
    import warnings

    from . import output, validate

    warnings.showwarning = output.show_warning
    args = sys.argv[1:] if argv is None else argv
    plain = validate.plain_arguments(args)
    if plain is not None:
        raise SystemExit(validate.validate(**plain))
    from .commands import app

    app(args=args, prog_name="tiled-archive")
