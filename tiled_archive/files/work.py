"""Work files and folders of ours (an output staged beside its destination, scratch folders in
``$TMPDIR``, a file copied under a temporary name), named with their owner: this machine, the
process id and the process's start time. A run that was killed leaves them behind; a later
run removes those whose owner is gone (a process id that is not running, or running since
another time: reused), and never anything else: another machine's, a live process's, a name
not of this form."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from .space import out_of_space

#: ``<host>-<pid>-<start>-``: the owner, in every work name.
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-")
#: Scratch folders in ``$TMPDIR``.
SCRATCH_PREFIX = "tiled-archive-"
#: Partial outputs beside their destination: ``.NAME.<owner>-<random>.partial``.
PARTIAL_SUFFIX = ".partial"


class StaleWorkRemoved(UserWarning):
    """A run removed what runs of its own making that stopped (were killed) left behind."""


@functools.cache
def _host() -> str:
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; 0 where the system does not say),
    or None when no such process runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 22, counted after the command's closing parenthesis (it may hold spaces).
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS): whether the process exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0


def owner() -> str:
    """This process's owner tag, as work names carry it (ending in ``-``)."""
    return _owner(os.getpid())  # a forked child is another owner


@functools.cache
def _owner(pid: int) -> str:
    return f"{_host()}-{pid}-{_started(pid) or 0}-"


def is_stale(name: str) -> bool:
    """Whether ``name`` is a work name of ours whose owner (of this machine) is gone."""
    found = _OWNER.search(name)
    if found is None or found["host"] != _host():
        return False
    started = _started(int(found["pid"]))
    return started is None or started != int(found["start"]) and started != 0


def stale_work(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """The stale work files and folders in ``folder`` named ``prefix…suffix``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [
        Path(folder, name)
        for name in sorted(names)
        if name.startswith(prefix) and name.endswith(suffix) and is_stale(name)
    ]


def sweep(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the stale work files and folders in ``folder`` named ``prefix…suffix``; warn in
    one line (:class:`StaleWorkRemoved`) when there were any. Returns what was removed."""
    removed = stale_work(folder, prefix, suffix)
    size = 0
    for path in removed:
        size += _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    if removed:
        shown = ", ".join(str(path) for path in removed[:3])
        more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
        warnings.warn(
            StaleWorkRemoved(
                f"removed {len(removed)} partial output(s) of earlier runs that were stopped "
                f"({size / 1e6:.1f} MB): {shown}{more}"
            ),
            stacklevel=2,
        )
    return removed


def sweep_tree(folders: Iterable[Path]) -> list[Path]:
    """:func:`sweep` of partial files (``.NAME.<owner>-<random>.partial``) in each folder."""
    removed = []
    for folder in folders:
        removed += sweep(folder, ".", PARTIAL_SUFFIX)
    return removed


def clean(folders: Iterable[Path]) -> list[Path]:
    """Remove every stale work file and folder of ours in ``folders`` (``$TMPDIR`` too): what
    killed runs left, partial outputs and scratch alike. Returns what was removed."""
    import tempfile

    removed: list[Path] = []
    for folder in dict.fromkeys([*folders, Path(tempfile.gettempdir())]):
        removed += sweep(folder, SCRATCH_PREFIX) + sweep(folder, f".{SCRATCH_PREFIX}")
        removed += sweep(folder, ".", PARTIAL_SUFFIX)
    return removed


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def make_work_folder(
    folder: Path | None = None, prefix: str = SCRATCH_PREFIX, suffix: str = ""
) -> Path:
    """A new work folder named with its owner (in ``folder``, default ``$TMPDIR``), after
    removing the stale ones of the same naming there."""
    import tempfile  # not imported by a check that makes no folder (validate --fast)

    where = Path(folder if folder is not None else tempfile.gettempdir())
    sweep(where, prefix, suffix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner()}", suffix=suffix, dir=where))


@contextlib.contextmanager
def work_folder(folder: Path | None = None, prefix: str = SCRATCH_PREFIX) -> Iterator[Path]:
    """:func:`make_work_folder`, removed with what it holds at the end of the block."""
    path = make_work_folder(folder, prefix)
    try:
        yield path
    except Exception as err:
        full = out_of_space(err, path)  # a file of the work folder: on its filesystem
        if full is None:
            raise
        raise full from None
    finally:
        shutil.rmtree(path, ignore_errors=True)


def partial_name(target: Path) -> str:
    """The name a file is written under beside ``target`` before it is renamed onto it."""
    return f".{target.name}.{owner()}{os.urandom(4).hex()}{PARTIAL_SUFFIX}"


__all__ = [
    "PARTIAL_SUFFIX",
    "SCRATCH_PREFIX",
    "StaleWorkRemoved",
    "clean",
    "is_stale",
    "make_work_folder",
    "owner",
    "partial_name",
    "stale_work",
    "sweep",
    "sweep_tree",
    "work_folder",
]
