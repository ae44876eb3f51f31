"""The command at a pseudo-terminal, as a user at a shell sees it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def under_a_terminal(
    *args: str | Path,
    columns: int = 60,
    on_output: Callable[[str, subprocess.Popen], None] | None = None,
) -> tuple[int, str]:
    """Run the command with its output on a pseudo-terminal ``columns`` wide, as a user at a
    shell sees it: (exit status, what the terminal showed). ``on_output(shown, process)`` is
    called as output arrives (to press Ctrl-C at some point, say)."""
    import os
    import pty

    leader, follower = pty.openpty()
    environment = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tiled_archive.cli", *map(str, args)],
        stdout=follower,
        stderr=follower,
        stdin=follower,
        env=environment,
        # Ctrl-C's signal acts as at a shell, also when this run was started where SIGINT is
        # ignored (a background job of a script), which a child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
        if on_output is not None:
            on_output(shown.decode(errors="replace"), process)
    os.close(leader)
    return process.wait(timeout=300), shown.decode(errors="replace")
