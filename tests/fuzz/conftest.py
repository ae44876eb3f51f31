"""Session set-up of the fuzzers: seeds, a warmed-up reading stack, the campaign, the summary."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from .campaign import CAMPAIGN, Campaign
from .runner import build_job, reset_thread_pools, run_in_child
from .seeds import CONFORMANCE_SEEDS, build_rich, conformance_seed, rich_seed


def _work_root() -> Path:
    base = os.environ.get("TILED_ARCHIVE_FUZZ_TMP")
    if not base:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="tiled-archive-fuzz-", dir=base))


def _warm_up(seed_dir: Path) -> None:
    """Import and build once, in this process, everything a case uses (Tiled's app and client,
    the adapters' libraries), so that each forked child starts warm; then check that nothing
    was left running (a fork copies no thread but the calling one)."""
    import h5py  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import stamina
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    import tiled_archive
    import tiled_archive.validator  # noqa: F401

    from .runner import _Walk, _walk

    stamina.set_testing(True)
    try:
        tiled_archive.validate(seed_dir)
        client = tiled_archive.open(seed_dir)
        try:
            _walk(_Walk(), client, "", 0)
        finally:
            client.close()
    finally:
        stamina.set_testing(False)
    reset_thread_pools(wait=True)
    for _ in range(50):
        others = [t for t in threading.enumerate() if t is not threading.main_thread()]
        if not others:
            break
        time.sleep(0.1)
    else:
        warnings.warn(f"threads left running after warm-up: {others}", stacklevel=1)


@pytest.fixture(scope="package")
def campaign():
    work = _work_root()
    failures = os.environ.get("TILED_ARCHIVE_FUZZ_FAILURES") or Path(
        tempfile.gettempdir(), "tiled-archive-fuzz"
    )
    failures = Path(failures) / time.strftime("%Y%m%d-%H%M%S")
    saved = os.environ.get("TILED_ARCHIVE_CACHE")
    try:
        rich_dir = work / "seed-rich" / "archive"
        rich_dir.parent.mkdir()
        built = run_in_child(
            build_job, build_rich, str(rich_dir), timeout=300, stderr=work / "seed-rich.log"
        )
        if built["findings"]:
            pytest.fail(f"could not build the rich seed: {built['findings']}\n{built['stderr']}")
        seeds = {name: conformance_seed(name) for name in CONFORMANCE_SEEDS}
        seeds["rich"] = rich_seed(rich_dir)
        os.environ["TILED_ARCHIVE_CACHE"] = str(work / "cache")  # not the user's cache
        _warm_up(
            Path(__file__).resolve().parents[2] / "conformance/fixtures/valid/real-data/archive"
        )
    finally:
        if saved is None:
            os.environ.pop("TILED_ARCHIVE_CACHE", None)
        else:
            os.environ["TILED_ARCHIVE_CACHE"] = saved
    current = Campaign(work, failures, seeds)
    CAMPAIGN.append(current)
    try:
        yield current
    finally:
        current.write_summary()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="package")
def seeds(campaign):
    return campaign.seeds


def pytest_terminal_summary(terminalreporter):
    if CAMPAIGN:
        terminalreporter.section("fuzz")
        for line in CAMPAIGN[0].summary():
            terminalreporter.write_line(line)
