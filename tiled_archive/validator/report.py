"""The report of one validation run (spec section 11: codes; ``validate --json``'s schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..rules.codes import Severity
from ..rules.names import FORMAT_VERSION, __version__
from ..rules.problems import Problem
from ..rules.schemas import package_text


@dataclass
class Report:
    """What one validation run found.

    ``form`` is ``"directory"`` or ``"zip"``, or None when the path is not an archive at all.
    ``format_version`` is the archive's own (from its manifest), when it could be read.
    With ``strict``, warnings make the archive invalid too.
    """

    path: str
    form: str | None
    fast: bool
    problems: list[Problem]
    format_version: str | None = None
    bytes_verified: int = 0
    seconds: float = 0.0
    strict: bool = False

    @property
    def errors(self) -> list[Problem]:
        return self._by_severity()[Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return self._by_severity()[Severity.WARNING]

    def _by_severity(self) -> dict[Severity, list[Problem]]:
        """The problems split by severity, once per length of the list (a report is read
        several times; a ZIP of 200,000 bad members has 400,000 problems)."""
        cached = self.__dict__.get("_split")
        if cached is None or cached[0] != len(self.problems):
            split: dict[Severity, list[Problem]] = {Severity.ERROR: [], Severity.WARNING: []}
            for problem in self.problems:
                split[problem.severity].append(problem)
            cached = self.__dict__["_split"] = (len(self.problems), split)
        return cached[1]

    @property
    def valid(self) -> bool:
        """Conforming: no error; warnings allowed unless ``strict``."""
        return not self.errors and not (self.strict and self.warnings)

    @property
    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def __repr__(self) -> str:
        return (
            f"Report(path={self.path!r}, form={self.form!r}, valid={self.valid}, "
            f"errors={len(self.errors)}, warnings={len(self.warnings)}, fast={self.fast}"
            + (", strict=True)" if self.strict else ")")
        )

    def exit_status(self) -> int:
        """0 valid, 1 invalid."""
        return 0 if self.valid else 1

    def to_json(self) -> dict[str, Any]:
        """The report as described by ``spec/report.schema.json``."""
        return {
            "validator": {
                "name": "tiled-archive",
                "version": __version__,
                "format_version": FORMAT_VERSION,
            },
            "path": self.path,
            "form": self.form,
            "mode": "fast" if self.fast else "full",
            "strict": self.strict,
            "format_version": self.format_version,
            "valid": self.valid,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [
                {
                    "code": p.code,
                    "severity": p.severity.value,
                    "path": p.path,
                    "message": p.message,
                    "hint": p.fix,
                }
                for p in self.problems
            ],
            "bytes_verified": self.bytes_verified,
            "seconds": round(self.seconds, 6),
        }


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``validate --json`` output (shipped with the package)."""
    return json.loads(package_text("report.schema.json"))
