"""What every command prints besides its result: coded errors, warnings, Ctrl-C, "could not
check". Rich is imported on first use, so a command that has nothing of this to say (a valid
archive's check) never loads it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ..files.space import out_of_space
from ..rules.problems import ArchiveError

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")

#: What Ctrl-C leaves behind, by command (a writer removes its partial output).
INTERRUPTED = {
    "download": "re-run the same command to resume: what was fetched is in the cache",
    "create": "nothing was written",
    "pack": "nothing was written",
    "extract": "nothing was written",
    "load": "nothing was loaded: the catalog is as it was, the copied files removed",
    "validate": "not checked",
}


def console(*, stderr: bool = False) -> Console:
    """A console that wraps at the terminal's width, and not at all when the output is piped
    or logged (rich's default there is 80 columns: commands and digests broke mid-line)."""
    from rich.console import Console

    made = Console(stderr=stderr)
    if not made.is_terminal:
        made.width = 1000
    return made


@functools.cache
def err_console() -> Console:
    """The one console on stderr (progress, messages, errors)."""
    return console(stderr=True)


def say(text: str, /, **options: object) -> None:
    """Print rich markup on stderr, unhighlighted (archive text must be escaped by the caller;
    ``markup=False`` prints ``text`` as it is)."""
    err_console().print(text, highlight=False, **options)


def reports_errors(command: F) -> F:
    """Turn an ArchiveError into its coded message and exit status 1, and Ctrl-C into a line
    saying what it left behind and exit status 130 (as a shell reports SIGINT); never a
    traceback."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except ArchiveError as err:
            from rich.markup import escape

            say(f"[bold red]error[/] {escape(str(err))}")
            raise SystemExit(1) from None
        except Exception as err:  # a full disk, wherever it struck, is a coded error too
            full = out_of_space(err)
            if full is None:
                raise
            from rich.markup import escape

            say(f"[bold red]error[/] {escape(str(full))}")
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            left = INTERRUPTED.get(command.__name__)
            say("[bold yellow]interrupted[/]" + (f": {left}" if left else ""))
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


def could_not_check(path: Path | str, why: str) -> NoReturn:
    """Exit with status 2: the check could not run at all (no verdict on the archive)."""
    from rich.markup import escape

    say(f"[bold red]could not check[/] {escape(str(path))}: {escape(why)}")
    raise SystemExit(2)


def check_or_exit(path: Path | str, check: Callable[[], R]) -> R:
    """Run ``check``; exit with status 2 and a clear message when it cannot run at all."""
    try:
        return check()
    except OSError as err:
        could_not_check(path, str(err))
    # Any other exception is a bug in the validator, not a verdict on the archive.
    except Exception as err:
        from rich.markup import escape

        say(
            f"[bold red]internal error[/] while checking {escape(str(path))}: "
            f"{type(err).__name__}: {escape(str(err))}"
        )
        raise SystemExit(2) from None


def show_warning(message: Warning | str, *_: object, **__: object) -> None:
    """A warning as one line, as the command's own output: no source file and line (an
    ArchiveWarning is a coded problem of the archive, not of our code)."""
    from rich.markup import escape

    say(f"[yellow]warning[/] {escape(str(message))}")
