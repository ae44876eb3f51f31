"""Section 10: conformance fixtures (folders holding ``expected.json``) and their runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..rules.names import MIMETYPE_NAME

if TYPE_CHECKING:
    from .report import Report

_FORMS = {"directory": "archive", "zip": "archive.zip"}


@dataclass(frozen=True)
class FixtureCase:
    """One form of one conformance fixture and the exact set of codes it must produce."""

    fixture: Path
    form: str
    archive: Path
    expected: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.fixture.parent.name}/{self.fixture.name}"


def fixture_cases(root: Path) -> list[FixtureCase]:
    """Every fixture form below ``root`` (folders holding ``expected.json``), sorted.

    ``expected.json`` maps each form the fixture holds (``"directory"``: ``archive/``,
    ``"zip"``: ``archive.zip``) to its codes, under ``"expected"``.
    """
    cases = []
    for spec_file in sorted(Path(root).rglob("expected.json")):
        expected = json.loads(spec_file.read_text(encoding="utf-8"))["expected"]
        for form, codes in sorted(expected.items()):
            archive = spec_file.parent / _FORMS[form]
            cases.append(FixtureCase(spec_file.parent, form, archive, frozenset(codes)))
    return cases


def is_fixture_tree(path: Path) -> bool:
    """Whether ``path`` is (or holds) conformance fixtures rather than being an archive."""
    if not path.is_dir() or (path / MIMETYPE_NAME).exists():
        return False
    return next(path.rglob("expected.json"), None) is not None


def run_cases(
    cases: Iterable[FixtureCase], run: Callable[[Path], Report] | None = None
) -> Iterator[tuple[FixtureCase, Report]]:
    """Validate each fixture form (full mode; ``run``: another validator's call)."""
    if run is None:
        from . import validate as run
    for case in cases:
        yield case, run(case.archive)
