"""The campaign: every case of every fuzzer, its findings deduplicated, and the summary.

A case is one mutated archive through one entry point. Findings do not stop the run (the
campaign is meant to find every distinct bug, not the first): each is recorded under its
signature with the smallest mutation that produced it (its archive and ``repro.json`` saved
under the failures folder), and each fuzz test fails at its end if it recorded any. With
``TILED_ARCHIVE_FUZZ_RAISE=TEXT`` a case whose finding's signature contains TEXT raises at
once, so Hypothesis shrinks it and prints the minimal mutation.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import reject

from .mutators import Skip
from .runner import CASE_SECONDS, Finding, open_job, run_in_child, validate_job
from .seeds import Seed

JOBS = {"validate": validate_job, "open": open_job}
RAISE = os.environ.get("TILED_ARCHIVE_FUZZ_RAISE", "")


@dataclass
class Record:
    """One distinct finding: how often it was met, and its smallest reproduction."""

    finding: Finding
    fuzzer: str
    count: int = 0
    seed: str = ""
    mutation: str = ""
    saved: str = ""


@dataclass
class Stats:
    cases: int = 0
    seconds: float = 0.0  # wall time of the cases, mutation and writing included
    findings: int = 0
    slowest: float = 0.0  # seconds of the slowest child
    peak: int = 0  # bytes: the largest RSS growth of a child
    outcomes: Counter = field(default_factory=Counter)  # first code (or "ok") per case
    started: float = field(default_factory=time.monotonic)


def child_job(job_name: str, path: str, cache: str) -> dict:
    """What a case's child runs: one entry point, with a cache folder of the case's own."""
    os.environ["TILED_ARCHIVE_CACHE"] = cache
    return JOBS[job_name](path)


class Campaign:
    def __init__(self, work: Path, failures: Path, seeds: dict[str, Seed]):
        self.work = work
        self.seeds = seeds
        self.failures = failures
        self.stats: dict[str, Stats] = {}
        self.records: dict[str, dict[str, Record]] = {}
        self.harness_errors: dict[str, list[str]] = {}  # mutations the fuzzer failed to apply

    def run(self, fuzzer: str, entry: str, seed: Seed, mutation: Any) -> dict:
        """Apply ``mutation`` to ``seed``, put the archive through ``entry`` in a child, and
        record what it found."""
        stats = self.stats.setdefault(fuzzer, Stats())
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="case-", dir=self.work))
        try:
            try:
                path, mutation = mutation.apply(seed, root)  # the reduced mutation
            except Skip:
                reject()
            except Exception as exc:  # noqa: BLE001 -- a bug of the fuzzer, not of the reader
                errors = self.harness_errors.setdefault(fuzzer, [])
                errors.append(f"{type(exc).__name__}: {exc} -- {mutation!r}"[:1500])
                reject()
            result = run_in_child(
                child_job,
                entry,
                str(path),
                str(root / "cache"),
                timeout=CASE_SECONDS + 5,  # a case over CASE_SECONDS is a finding; killed here
                stderr=root / "stderr",
            )
            findings = [Finding(**f) for f in result["findings"]]
            stats.cases += 1
            stats.slowest = max(stats.slowest, result["seconds"])
            stats.peak = max(stats.peak, result.get("peak", 0))
            stats.findings += len(findings)
            codes = result.get("codes") or []
            stats.outcomes["finding" if findings else (codes[0] if codes else "ok")] += 1
            for item in findings:
                self._record(fuzzer, item, seed, mutation, path, result)
            if RAISE and any(RAISE in f.signature for f in findings):
                raise AssertionError("\n".join(map(str, findings)))
            return result
        finally:
            stats.seconds += time.monotonic() - started
            shutil.rmtree(root, ignore_errors=True)

    def _record(
        self, fuzzer: str, item: Finding, seed: Seed, mutation: Any, path: Path, result: dict
    ) -> None:
        records = self.records.setdefault(fuzzer, {})
        record = records.setdefault(item.signature, Record(item, fuzzer))
        record.count += 1
        text = repr(mutation)
        if record.mutation and len(text) >= len(record.mutation):
            return
        record.finding, record.seed, record.mutation = item, seed.name, text
        folder = (
            self.failures / f"{fuzzer.replace('/', '-')}-{zlib.crc32(item.signature.encode()):08x}"
        )
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if path.is_dir():
            shutil.copytree(path, folder / path.name, symlinks=True)
        elif path.exists():
            shutil.copy2(path, folder / path.name)
        repro = {
            "fuzzer": fuzzer,
            "signature": item.signature,
            "seed": seed.name,
            "mutation": text,
            "archive": str(folder / path.name),
            "finding": str(item),
            "frames": item.frames,
            "stderr": result.get("stderr", "")[-3000:],
        }
        (folder / "repro.json").write_text(json.dumps(repro, indent=2, default=str))
        record.saved = str(folder)

    def failures_of(self, fuzzer: str) -> list[Record]:
        return list(self.records.get(fuzzer, {}).values())

    def summary(self) -> list[str]:
        lines = []
        total = sum(s.cases for s in self.stats.values())
        found = sum(s.findings for s in self.stats.values())
        distinct = sum(len(r) for r in self.records.values())
        for name, stats in sorted(self.stats.items()):
            rate = stats.cases / stats.seconds if stats.seconds else 0.0
            top = ", ".join(f"{k} {v}" for k, v in stats.outcomes.most_common(6))
            lines.append(
                f"fuzz {name}: {stats.cases} archives in {stats.seconds:.0f} s "
                f"({rate:.2f}/s), {stats.findings} findings; slowest {stats.slowest:.1f} s, "
                f"peak +{stats.peak / 2**20:.0f} MiB; outcomes: {top}"
            )
        for records in self.records.values():
            for record in records.values():
                lines.append(f"  {record.count}x {record.fuzzer}: {record.finding.signature}")
                lines.append(f"      {record.saved}")
        for name, errors in sorted(self.harness_errors.items()):
            lines.append(f"fuzz {name}: {len(errors)} mutations failed to apply: {errors[0]}")
        lines.append(
            f"fuzz: {total} archives, {found} uncaught exceptions"
            + (f" ({distinct} distinct; reproductions in {self.failures})" if distinct else "")
        )
        return lines

    def write_summary(self) -> None:
        self.failures.mkdir(parents=True, exist_ok=True)
        data = {
            "fuzzers": {
                name: {
                    "cases": s.cases,
                    "seconds": round(s.seconds, 1),
                    "findings": s.findings,
                    "slowest_seconds": round(s.slowest, 2),
                    "peak_bytes": s.peak,
                    "outcomes": dict(s.outcomes),
                }
                for name, s in self.stats.items()
            },
            "distinct": [
                {
                    "fuzzer": r.fuzzer,
                    "signature": r.finding.signature,
                    "count": r.count,
                    "seed": r.seed,
                    "mutation": r.mutation,
                    "finding": str(r.finding),
                    "saved": r.saved,
                }
                for records in self.records.values()
                for r in records.values()
            ],
        }
        (self.failures / "summary.json").write_text(json.dumps(data, indent=2))


CAMPAIGN: list[Campaign] = []  # the session's campaign, once started (for the summary hook)
