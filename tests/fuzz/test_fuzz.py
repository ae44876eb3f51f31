"""Fuzzing the entry points with mutated archives (see tests/fuzz/README.md).

Four mutation targets (ZIP bytes, the manifest's JSON, catalog rows, data-file headers), each
put through ``tiled_archive.validate`` and through ``tiled_archive.open`` plus a walk of every
node, each case in a forked child bounded in time and memory. ``TILED_ARCHIVE_FUZZ_EXAMPLES``
(validate) and ``TILED_ARCHIVE_FUZZ_OPEN_EXAMPLES`` (open and read) set the examples per test;
the defaults are the small sample ``make test`` runs, ``make fuzz`` sets them large.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .campaign import child_job
from .mutators import catalog_mutations, data_mutations, manifest_mutations, zip_mutations
from .runner import CASE_SECONDS, run_in_child
from .seeds import SEED_NAMES

VALIDATE_EXAMPLES = int(os.environ.get("TILED_ARCHIVE_FUZZ_EXAMPLES", "30"))
OPEN_EXAMPLES = int(os.environ.get("TILED_ARCHIVE_FUZZ_OPEN_EXAMPLES", "6"))
RANDOM = os.environ.get("TILED_ARCHIVE_FUZZ_RANDOM", "") == "1"

TARGETS = {
    "zip-bytes": zip_mutations,
    "manifest": manifest_mutations,
    "catalog": catalog_mutations,
    "data-headers": data_mutations,
}


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,  # each case has its own bound (runner.CASE_SECONDS), in the child
        derandomize=not RANDOM,  # make test: the same sample every run
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink]
        if os.environ.get("TILED_ARCHIVE_FUZZ_RAISE")
        else [Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def fail_on_findings(campaign, fuzzer: str) -> None:
    lines = []
    harness = campaign.harness_errors.get(fuzzer, [])
    if harness:
        lines.append(
            f"{len(harness)} mutation(s) failed to apply (a fuzzer bug); first: {harness[0]}"
        )
    records = campaign.failures_of(fuzzer)
    if records:
        lines.append(f"{len(records)} distinct uncaught exception(s) in {fuzzer}:")
        for record in records:
            lines.append(f"- {record.count}x {record.finding.signature}")
            lines.append(f"  seed {record.seed}, mutation {record.mutation[:800]}")
            lines.append(f"  {record.finding}")
            lines.append(f"  saved: {record.saved}")
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)


# Opening archives with mutated data headers (the longest sample, 7-17 s) under make test-slow;
# make fuzz runs it at full size.
@pytest.mark.parametrize(
    ("fuzzer", "entry"),
    [
        pytest.param(
            fuzzer,
            entry,
            marks=pytest.mark.slow if (fuzzer, entry) == ("data-headers", "open") else (),
        )
        for fuzzer in TARGETS
        for entry in ("validate", "open")
    ],
)
def test_fuzz(campaign, seeds, fuzzer, entry):
    """``entry`` on mutated archives of ``fuzzer``'s kind: no uncaught exception, no crash,
    each case within its time and memory bounds."""
    name = f"{fuzzer}/{entry}"
    examples = VALIDATE_EXAMPLES if entry == "validate" else OPEN_EXAMPLES
    if examples <= 0:
        pytest.skip(f"0 examples for {entry}")

    @fuzz_settings(examples)
    @given(seed=st.sampled_from(SEED_NAMES), mutation=TARGETS[fuzzer]())
    def run(seed, mutation):
        campaign.run(name, entry, seeds[seed], mutation)

    run()
    fail_on_findings(campaign, name)


def test_seeds_are_good(campaign, seeds, tmp_path):
    """Every seed, in both forms, validates without errors; the rich seed also opens and reads
    with no code at all (so that what the fuzzers find is due to their mutations)."""
    from conformance.generate import write_tree

    problems = []
    for name, seed in seeds.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "archive.zip").write_bytes(seed.zip)
        write_tree(seed.tree, folder / "archive")
        for path in (folder / "archive", folder / "archive.zip"):
            for entry in ["validate", "open"] if name == "rich" else ["validate"]:
                result = run_in_child(
                    child_job,
                    entry,
                    str(path),
                    str(tmp_path / "cache"),
                    timeout=CASE_SECONDS * 3,
                    stderr=tmp_path / "stderr",
                )
                errors = [c for c in result.get("codes", []) if c.startswith("TA-E")]
                if result["findings"] or errors:
                    problems.append(f"{path} {entry}: {result}")
    assert not problems, "\n".join(problems)
