"""How validation reports and conformance runs are shown: tables of problems, the fix for each
code, a one-line verdict."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..rules.codes import Severity
from ..rules.problems import Problem, clip, plural
from . import output

if TYPE_CHECKING:
    from rich.console import Console

    from ..validator import FixtureCase, Report

#: Rows of one code a report table shows; the rest are counted (``--json`` lists them all).
ROWS_PER_CODE = 3


def print_report(report: Report) -> None:
    """On stdout: a table of the problems (at most ROWS_PER_CODE rows of one code, the rest
    counted), how to fix each code found, then a one-line verdict."""
    if not report.problems and not sys.stdout.isatty():
        # One plain line, as rich would print it here: without rich's import (~0.05 s, as long
        # as a fast check of a small archive takes).
        print(verdict(report, markup=False))
        return
    from rich.markup import escape
    from rich.table import Table

    console = output.console()
    if report.problems:
        table = Table(show_lines=False, header_style="bold")
        for column in ("code", "severity", "path", "message"):
            table.add_column(column, overflow="fold")
        by_code: dict[str, list[Problem]] = {}
        for problem in report.problems:
            by_code.setdefault(problem.code, []).append(problem)
        for code, found in by_code.items():
            color = "red" if found[0].severity is Severity.ERROR else "yellow"
            for problem in found[:ROWS_PER_CODE]:
                table.add_row(
                    f"[{color}]{code}[/]",
                    problem.severity.value,
                    escape(clip(problem.path or "")),  # archive text: never rich markup
                    escape(clip(problem.message)),
                )
            if len(found) > ROWS_PER_CODE:
                more = len(found) - ROWS_PER_CODE
                table.add_row(
                    f"[{color}]{code}[/]", "", f"… and {more} more", "(--json lists them all)"
                )
        console.print(table)
        for code, found in by_code.items():
            console.print(f"fix {code}: {escape(found[0].fix)}", highlight=False)
    console.print(verdict(report), highlight=False)


def verdict(report: Report, *, markup: bool = True) -> str:
    """One line: VALID or INVALID, the counts, and what was checked (rich markup, or plain)."""
    mode = "fast" if report.fast else "full"
    counts = f"{plural(len(report.errors), 'error')}, {plural(len(report.warnings), 'warning')}"
    why = " (--strict: warnings count)" if not report.valid and not report.errors else ""
    word, style = ("VALID", "bold green") if report.valid else ("INVALID", "bold red")
    path = str(report.path)
    if markup:
        from rich.markup import escape

        word, path = f"[{style}]{word}[/]", escape(path)
    return f"{word} {path}: {counts}{why} ({mode} check)"


def print_conformance(
    results: Iterable[tuple[FixtureCase, Report]], console: Console, *, as_json: bool = False
) -> int:
    """A pass/fail table of fixture runs and a summary line (with ``as_json``, one JSON
    document: every run's fixture, form, expected and reported codes, and whether it
    passed); returns how many failed."""
    from rich.table import Table

    runs = [
        {
            "fixture": case.name,
            "form": case.form,
            "expected": sorted(case.expected),
            "got": sorted(report.codes),
            "passed": report.codes == case.expected,
        }
        for case, report in results
    ]
    failed = sum(not run["passed"] for run in runs)
    if as_json:
        console.print_json(data={"passed": len(runs) - failed, "failed": failed, "runs": runs})
        return failed
    table = Table(header_style="bold")
    for column in ("fixture", "form", "expected", "got", "result"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run["fixture"],
            run["form"],
            " ".join(run["expected"]) or "-",
            " ".join(run["got"]) or "-",
            "[green]pass[/]" if run["passed"] else "[bold red]FAIL[/]",
        )
    console.print(table)
    summary = f"{len(runs) - failed} of {len(runs)} fixture forms give exactly their codes"
    console.print(
        f"[bold green]PASS[/] {summary}" if not failed else f"[bold red]FAIL[/] {summary}",
        highlight=False,
    )
    return failed
