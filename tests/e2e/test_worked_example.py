"""Appendix B of the spec, rebuilt from the spec's own text: its blocks are run as a third
party would run them (a POSIX shell, ``printf``, ``sqlite3``, ``sha256sum``, Info-ZIP), and
the result is checked against the digests the spec gives."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.validator import validate

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "FORMAT.md"
SCHEMA = ROOT / "spec" / "catalog-schema-917dbbcfc4b1.sql"
#: The SQLite the spec's digests were made with (appendix B.3).
QUOTED_SQLITE = "3.40.1"
#: Files whose bytes depend on the SQLite library (appendix B.4).
SQLITE_DEPENDENT = {"catalog.db", "tiled-archive.json", "tagmanifest-sha256.txt", "example.zip"}

#: Stands in for the sqlite3 shell where it is not installed, as appendix B.2 says: each
#: statement of standard input in its own transaction, with Python's SQLite.
SQLITE3_SHIM = """#!{python}
import sqlite3, sys
sqlite3.connect(sys.argv[1], isolation_level=None).executescript(sys.stdin.read())
"""


def blocks() -> dict[str, str]:
    """The appendix's blocks, by the name in the comment before each."""
    text = SPEC.read_text(encoding="utf-8")
    appendix = text[text.index("## Appendix B. A worked example") :]
    found = re.findall(r"<!-- worked-example: (\S+) -->\n```\w*\n(.*?)```", appendix, re.DOTALL)
    return dict(found)


def digest_lines(text: str) -> dict[str, str]:
    return {line[66:]: line[:64] for line in text.splitlines()}


def sqlite_version(bin_dir: Path | None) -> str:
    """The version of the SQLite that writes the catalog: the shell's, or Python's."""
    if bin_dir is None:
        out = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    return sqlite3.sqlite_version


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The example built by build.sh in a fresh folder, and the SQLite version that wrote it."""
    for tool in ("sh", "sha256sum", "cut", "wc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    work = tmp_path_factory.mktemp("worked-example")
    shutil.copyfile(SCHEMA, work / SCHEMA.name)
    parts = blocks()
    (work / "example.sql").write_text(parts["example.sql"], encoding="utf-8")
    (work / "build.sh").write_text(parts["build.sh"], encoding="utf-8")
    env = None
    bin_dir = None
    if shutil.which("sqlite3") is None:
        bin_dir = work / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "sqlite3"
        shim.write_text(SQLITE3_SHIM.format(python=sys.executable), encoding="utf-8")
        shim.chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", "build.sh"], cwd=work, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return work, sqlite_version(bin_dir)


def test_the_blocks_are_there():
    assert set(blocks()) == {
        "example.sql",
        "build.sh",
        "tiled-archive.json",
        "sha256",
        "zip.sh",
        "zip-sha256",
    }
    assert f"With SQLite {QUOTED_SQLITE} (" in SPEC.read_text(encoding="utf-8")


def test_the_example_is_valid_and_tiled_reads_it(built):
    import tiled_archive

    work, _ = built
    report = validate(work / "example")
    assert report.problems == [], [str(p) for p in report.problems]
    with tiled_archive.open(work / "example") as client:
        assert list(client) == ["x"]
        table = client["x"].read()
        assert list(table.columns) == ["x", "y"]
        assert list(table["x"]) == [1, 2] and list(table["y"]) == [2.5, 3.5]


def test_every_digest_is_the_spec_s(built):
    """Every file's SHA-256 is the one the spec lists; those that depend on the SQLite
    library (B.4) only when it is the version the spec quotes."""
    work, version = built
    listed = digest_lines(blocks()["sha256"])
    example = work / "example"
    on_disk = sorted(p.relative_to(example).as_posix() for p in example.rglob("*") if p.is_file())
    assert sorted(listed) == on_disk
    for name, expected in listed.items():
        if name in SQLITE_DEPENDENT and version != QUOTED_SQLITE:
            continue
        assert hashlib.sha256((example / name).read_bytes()).hexdigest() == expected, name
    # The manifest block is the file, but for the two lines B.4 says depend on SQLite.
    built_lines = (example / "tiled-archive.json").read_text(encoding="utf-8").splitlines()
    spec_lines = blocks()["tiled-archive.json"].splitlines()
    assert len(built_lines) == len(spec_lines)
    pairs = enumerate(zip(built_lines, spec_lines, strict=True), start=1)
    differing = {number for number, (ours, theirs) in pairs if ours != theirs}
    assert differing <= ({4, 5} if version != QUOTED_SQLITE else set())
    document = json.loads((example / "tiled-archive.json").read_bytes())
    assert document["catalog"]["size"] == (example / "catalog.db").stat().st_size


def test_the_zip_form(built):
    """zip.sh's ZIP is valid with TA-W102 only; with Info-ZIP 3.0 and the quoted SQLite, its
    digest is the spec's."""
    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP zip is not installed")
    work, version = built
    (work / "zip.sh").write_text(blocks()["zip.sh"], encoding="utf-8")
    (work / "example.zip").unlink(missing_ok=True)
    result = subprocess.run(["sh", "zip.sh"], cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = validate(work / "example.zip")
    assert report.codes == {"TA-W102"}
    assert len(report.problems) == 7
    zip_version = subprocess.run(["zip", "-v"], capture_output=True, text=True).stdout
    if version == QUOTED_SQLITE and "This is Zip 3.0 " in zip_version:
        (expected,) = digest_lines(blocks()["zip-sha256"]).values()
        assert hashlib.sha256((work / "example.zip").read_bytes()).hexdigest() == expected
