"""Replay a saved fuzz case, in this process, with full tracebacks.

    .venv/bin/python -m tests.fuzz.replay FOLDER_OR_ARCHIVE [validate|open|both]

FOLDER is one written by the campaign (``<failures>/<fuzzer>-<n>/``, holding ``repro.json``
and the archive); an archive path (a directory archive or a ZIP) works too. The job runs in
this process (no fork, no bounds), so that the exception and its traceback are shown whole.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .runner import open_job, validate_job


def main(argv: list[str]) -> int:
    target = Path(argv[0])
    entry = argv[1] if len(argv) > 1 else "both"
    if (target / "repro.json").exists():
        repro = json.loads((target / "repro.json").read_text())
        print(f"{repro['fuzzer']}: {repro['signature']}\nseed {repro['seed']}: {repro['mutation']}")
        target = Path(repro["archive"])
    os.environ.setdefault("TILED_ARCHIVE_CACHE", tempfile.mkdtemp(prefix="fuzz-replay-"))
    status = 0
    for name, job in (("validate", validate_job), ("open", open_job)):
        if entry not in (name, "both"):
            continue
        try:
            result = job(str(target))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            return 1
        print(f"== {name}: codes {result.get('codes')}")
        for finding in result["findings"]:
            status = 1
            print(f"{finding['entry']} {finding['where']} {finding['kind']}: {finding['message']}")
            for frame in finding["frames"]:
                print(f"    {frame}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
