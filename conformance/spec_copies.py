"""Write the published JSON Schemas under ``spec/`` from their one source, the package.

    .venv/bin/python conformance/spec_copies.py          # rewrite the spec copies
    .venv/bin/python conformance/spec_copies.py --check  # exit 1 if one would change

The validator reads ``tiled_archive/rules/<name>``; ``spec/<name>`` is what a third party reads.
The test suite runs the check, so a schema changed in the package without its copy fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tiled_archive" / "rules"
SPEC = ROOT / "spec"
#: The schemas the spec publishes, each copied byte for byte from the package.
PUBLISHED = ("manifest.schema.json", "report.schema.json")


def stale() -> list[str]:
    """The published copies that differ from their source (or are missing)."""
    return [
        name
        for name in PUBLISHED
        if not (SPEC / name).is_file()
        or (SPEC / name).is_symlink()
        or (SPEC / name).read_bytes() != (SOURCE / name).read_bytes()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a copy would change")
    args = parser.parse_args()
    names = stale()
    if args.check:
        for name in names:
            print(f"spec/{name} differs from tiled_archive/rules/{name}", file=sys.stderr)
        return 1 if names else 0
    for name in names:
        target = SPEC / name
        target.unlink(missing_ok=True)
        target.write_bytes((SOURCE / name).read_bytes())
        print(f"wrote spec/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
