"""Walking archives through the Tiled client, and watching the canaries.

``walk`` visits every node below a client node (containers recursively, arrays by a corner
slice and, when small, whole; tables whole) and records what each access gave: a value, an
error naming a code (``TA-E…``/``TA-W…`` in its message), or a raw error (anything else: an
exception class from deep inside a library, an HTTP 500 without a code). ``verdict`` turns
that record into the problems a test reports.

``CanaryWatch`` watches every canary file and folder with inotify (IN_OPEN, IN_ACCESS): a
Python audit hook would not see opens made by the HDF5 C library.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .generate import CANARY_MARK

CODE = re.compile(r"TA-[EW]\d{3}")
#: Names of Python exceptions that must never reach a user's output.
RAW_EXCEPTION = re.compile(r"\b(?!ArchiveError\b)[A-Z]\w*(?:Error|Exception)\b|Traceback")
#: Arrays at most this big are also read whole in-process.
SMALL = 64 << 20
MAX_DEPTH = 70  # deeper than the 64 levels the contract allows, so a missing limit shows
MAX_NODES = 400


@dataclass
class Outcome:
    path: str
    action: str  # list, get, corner, end, full, read
    status: str  # ok, code, raw, limit, canary, leak (a code whose message names an exception)
    code: str | None = None
    text: str = ""

    def __str__(self) -> str:
        what = self.code or self.status
        return f"{self.path} {self.action}: {what}{' -- ' + self.text if self.text else ''}"


@dataclass
class Walk:
    outcomes: list[Outcome] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    nodes: int = 0

    def error(self, path: str, action: str, exc: BaseException) -> None:
        text = describe(exc)
        found = CODE.search(text)
        status = "code" if found else "raw"
        self.outcomes.append(Outcome(path, action, status, found.group() if found else None, text))
        leaked = RAW_EXCEPTION.findall(str(exc)) if found else []
        if leaked:  # a coded message that still shows a library's exception to the user
            self.outcomes.append(
                Outcome(
                    path,
                    action,
                    "leak",
                    found.group(),  # type: ignore[union-attr]
                    f"message names {sorted(set(leaked))}",
                )
            )

    def value(self, path: str, action: str, value: Any) -> None:
        if holds_canary(value):
            self.outcomes.append(Outcome(path, action, "canary", None, "canary bytes read back"))
        else:
            self.outcomes.append(Outcome(path, action, "ok"))
        self.values[f"{path}:{action}"] = value

    @property
    def first_code(self) -> str | None:
        return next((o.code for o in self.outcomes if o.status == "code"), None)

    def report(self) -> str:
        return "\n".join(f"  {o}" for o in self.outcomes) or "  (nothing visited)"


def describe(exc: BaseException) -> str:
    """``Class: message`` of an exception, for reports (long messages cut)."""
    text = str(exc)
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(exc).__name__}: {text}"


def holds_canary(value: Any) -> bool:
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return any(holds_canary(value[c].to_numpy()) for c in value.columns)
        array = np.asarray(value)
        if array.dtype == object:
            return any(CANARY_MARK in repr(v).encode("latin-1", "replace") for v in array.flat)
        return CANARY_MARK in np.ascontiguousarray(array).tobytes()
    except Exception:  # noqa: BLE001 -- a value we cannot inspect holds no canary we can see
        return False


def family(node: Any) -> str:
    value = node.structure_family
    return getattr(value, "value", value)


def walk(
    node: Any, path: str, *, reads: bool = True, result: Walk | None = None, depth: int = 0
) -> Walk:
    """Visit ``node`` and everything below it; returns the record."""
    result = result if result is not None else Walk()
    result.nodes += 1
    if result.nodes > MAX_NODES:
        if not any(o.status == "limit" for o in result.outcomes):
            result.outcomes.append(Outcome(path, "walk", "limit", None, f"> {MAX_NODES} nodes"))
        return result
    kind = family(node)
    if kind == "container":
        try:
            keys = list(node)
        except Exception as exc:  # noqa: BLE001
            result.error(path, "list", exc)
            return result
        for key in keys:
            child_path = f"{path}/{key}"
            if depth + 1 > MAX_DEPTH:
                result.outcomes.append(
                    Outcome(
                        child_path, "walk", "limit", None, f"still no error {MAX_DEPTH} levels down"
                    )
                )
                return result
            try:
                child = node[key]
            except Exception as exc:  # noqa: BLE001
                result.error(child_path, "get", exc)
                continue
            walk(child, child_path, reads=reads, result=result, depth=depth + 1)
    elif not reads:
        return result
    elif kind == "array":
        read_array(node, path, result)
    else:  # table, awkward, sparse, ...
        try:
            result.value(path, "read", node.read())
        except Exception as exc:  # noqa: BLE001
            result.error(path, "read", exc)
    return result


def read_array(node: Any, path: str, result: Walk) -> None:
    try:
        shape = tuple(node.shape)
        nbytes = math.prod(shape) * node.dtype.itemsize
    except Exception as exc:  # noqa: BLE001
        result.error(path, "structure", exc)
        return
    if 0 in shape:
        return
    reads = [("corner", tuple(slice(0, 1) for _ in shape))]
    if shape:
        reads.append(("end", tuple(slice(n - 1, n) for n in shape)))
    for action, where in reads:
        try:
            result.value(path, action, node[where] if where else node.read())
        except Exception as exc:  # noqa: BLE001
            result.error(path, action, exc)
            return
    if nbytes <= SMALL:
        try:
            result.value(path, "full", node.read())
        except Exception as exc:  # noqa: BLE001
            result.error(path, "full", exc)


def alternatives(expected: str | None) -> set[str]:
    return set(expected.split("|")) if expected else set()


def verdict(record: Walk, expected: str | None) -> list[str]:
    """What is wrong with a walk that should have met ``expected`` first (None: no error)."""
    problems = []
    for outcome in record.outcomes:
        if outcome.status == "canary":
            problems.append(f"canary bytes in values read at {outcome.path} ({outcome.action})")
        elif outcome.status == "raw":
            problems.append(f"raw error at {outcome.path} ({outcome.action}): {outcome.text}")
        elif outcome.status == "limit":
            problems.append(f"walk limit at {outcome.path}: {outcome.text}")
        elif outcome.status == "leak":
            problems.append(
                f"raw exception class name in the {outcome.code} message at "
                f"{outcome.path} ({outcome.action}): {outcome.text}"
            )
    codes = [o for o in record.outcomes if o.status == "code"]
    if expected is None:
        problems += [f"unexpected {o.code} at {o.path} ({o.action}): {o.text}" for o in codes]
    elif not codes:
        problems.append(f"no {expected} anywhere: every access succeeded or failed without a code")
    elif codes[0].code not in alternatives(expected):
        problems.append(
            f"first code {codes[0].code} at {codes[0].path}, expected {expected}: {codes[0].text}"
        )
    return problems


# -- Canaries --------------------------------------------------------------------------------


class CanaryWatch:
    """inotify watches on every file and folder below ``root`` (``root/<case>/...``)."""

    def __init__(self, root: Path):
        from inotify_simple import INotify, flags

        self.inotify = INotify()
        self.watched: dict[int, tuple[str, Path]] = {}
        self.events: dict[str, list[str]] = defaultdict(list)
        paths = [p for case in sorted(root.iterdir()) for p in [case, *sorted(case.rglob("*"))]]
        for path in paths:
            case = path.relative_to(root).parts[0]
            wd = self.inotify.add_watch(path, flags.OPEN | flags.ACCESS)
            self.watched[wd] = (case, path)
        self.inotify.read(timeout=0)  # listing the folders above opened some of them
        self.flags = flags

    def drain(self) -> None:
        for event in self.inotify.read(timeout=0):
            if event.wd in self.watched:
                case, path = self.watched[event.wd]
                names = "|".join(f.name for f in self.flags.from_mask(event.mask))
                self.events[case].append(f"{names} {path / event.name if event.name else path}")

    def count(self, case: str) -> int:
        self.drain()
        return len(self.events.get(case, []))

    def since(self, case: str, start: int) -> list[str]:
        self.drain()
        return self.events.get(case, [])[start:]

    @contextmanager
    def untouched(self, case: str) -> Iterator[list[str]]:
        """Yields a list that holds, after the block, the canary accesses made in it."""
        start = self.count(case)
        touched: list[str] = []
        try:
            yield touched
        finally:
            touched.extend(self.since(case, start))
