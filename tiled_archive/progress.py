"""The one progress display of every long command (create, pack, extract, download,
validate): a bar per step, bytes and their rate for a transfer (a task with ``bytes=True``),
a count for the rest, a spinner while a total is unknown. Drawn on stderr at a terminal only,
and gone when the step ends (``transient``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class _AmountColumn(ProgressColumn):
    """Bytes and speed for a transfer (a task with ``bytes=True``), nothing for a step of
    unknown length (``step=True``), a count for the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._size, self._speed, self._count = (
            DownloadColumn(),
            TransferSpeedColumn(),
            MofNCompleteColumn(),
        )

    def render(self, task: Task) -> Text:
        if task.fields.get("step"):
            return Text()
        if task.fields.get("bytes"):
            return Text.assemble(self._size.render(task), " ", self._speed.render(task))
        return self._count.render(task)


def progress_display(quiet: bool, console: Console | None = None) -> Progress:
    """A Progress to use as a context manager, drawn on ``console`` (default: stderr).

    Nothing is drawn when ``quiet``, nor when the console is not a terminal (or a notebook):
    on a pipe or in a log, rich prints no bar but ends every display with an empty line, and
    rich's default console is stdout, where a command's result goes (a piped download printed
    three empty lines there)."""
    console = console or Console(stderr=True)
    return Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not (console.is_interactive or console.is_jupyter),
        transient=True,
    )


@contextlib.contextmanager
def step(quiet: bool, description: str) -> Iterator[None]:
    """A spinner naming a step whose length is unknown (loading Tiled, registering files,
    connecting), so a command shows something within its first second."""
    with progress_display(quiet) as progress:
        progress.add_task(description, total=None, step=True)
        yield


def described(step: str, skipped: int, why: str) -> str:
    """A bar's description naming the ``skipped`` bytes left out of its total (``why``: they
    took no work, e.g. hard-linked), so that its rate counts only the bytes really handled."""
    return f"{step} ({decimal(skipped)} {why})" if skipped else step
