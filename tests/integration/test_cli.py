"""The `tiled-archive` command, run through `main(argv)` in this process: its output as a pipe
takes it, its exit status. (tests/e2e/test_cli_process.py runs it in processes of its own.)"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.reader import open_archive

from ..conftest import FIXTURES, cli


def asset_uris(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT data_uri FROM assets")]


def test_create_pack_extract_relocate(sample_tree, tmp_path):
    made = cli("create", "--quiet", tmp_path / "a", sample_tree)
    assert made.returncode == 0, made.stderr
    packed = cli("pack", "-q", tmp_path / "a", tmp_path / "a.zip")
    assert packed.returncode == 0, packed.stderr
    extracted = cli("extract", "-q", tmp_path / "a.zip", tmp_path / "x")
    assert extracted.returncode == 0, extracted.stderr
    assert "tiled serve catalog" in extracted.stderr
    assert all(
        u.startswith(f"file://localhost{(tmp_path / 'x').resolve()}/data/")
        for u in asset_uris(tmp_path / "x" / "catalog.db")
    )

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "x", moved)
    relocated = cli("relocate", moved)
    assert relocated.returncode == 0, relocated.stderr
    assert all(
        u.startswith(f"file://localhost{moved.resolve()}/data/")
        for u in asset_uris(moved / "catalog.db")
    )
    with open_archive(moved) as archive:
        archive.catalog_path()  # verified against the updated manifest
    bagit = Path(sys.executable).parent / "bagit.py"
    assert subprocess.run([bagit, "--validate", moved], capture_output=True).returncode == 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["create", "{tmp}/out.zip", "{tmp}/missing"], "TA-E900"),
        (["pack", "{tmp}/missing", "{tmp}/out.zip"], "TA-E001"),
        (["extract", "{tmp}/garbage.zip", "{tmp}/out"], "TA-E100"),
        (["pack", "{tmp}", "{tmp}/out.tar"], "TA-E904"),
    ],
)
def test_errors_are_coded_lines_not_tracebacks(tmp_path, args, code):
    (tmp_path / "garbage.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 1
    assert code in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out.zip").exists() and not (tmp_path / "out").exists()


# -- First use: version, help, module entry point, exit statuses, output that is piped -------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_the_package_and_the_format(flag):
    from tiled_archive.rules.names import FORMAT_VERSION, __version__

    result = cli(flag)
    assert result.returncode == 0
    assert result.stdout == f"tiled-archive {__version__} (format {FORMAT_VERSION})\n"


def test_validate_of_nothing_could_not_check_it(tmp_path):
    result = cli("validate", tmp_path / "nonexist.zip")
    assert result.returncode == 2
    assert result.stderr.startswith("could not check ")
    assert "no such file or directory" in result.stderr and "INVALID" not in result.stdout


def test_verdicts_count_in_the_singular_and_plural():
    valid = cli("validate", FIXTURES / "valid" / "ragged-duckdb" / "archive")
    assert valid.returncode == 0 and "0 errors, 0 warnings" in valid.stdout
    one = cli("validate", FIXTURES / "invalid" / "E601-ragged-null-values" / "archive")
    assert one.returncode == 1 and ": 1 error, 0 warnings" in one.stdout


def test_serve_of_nothing_announces_nothing(tmp_path):
    result = cli("serve", tmp_path / "nonexist.zip", "--port", "1")
    assert result.returncode == 1
    assert "TA-E001" in result.stderr
    assert "serving" not in result.stderr and "from_uri" not in result.stderr


def test_piped_output_is_not_wrapped(tmp_path):
    """The stock serve command is one line however long, and a table row is too."""
    dest = tmp_path / ("a-long-folder-name-" * 4) / "extracted"
    result = cli("extract", FIXTURES / "valid" / "ragged-duckdb" / "archive.zip", dest)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stderr.splitlines() if "tiled serve catalog" in line]
    assert command.endswith("--public") and str(dest / "catalog.db") in command
    report = cli("validate", FIXTURES / "invalid" / "E601-ragged-null-values" / "archive")
    (row,) = [line for line in report.stdout.splitlines() if "│ TA-E601" in line]
    assert "holds NULL values (Tiled writes none)" in row


def test_piped_commands_print_no_empty_lines(sample_tree, tmp_path):
    """Piped, stdout holds a command's result and nothing else: the progress display, drawn
    on stderr at a terminal only, ended each of its displays with an empty line on stdout (a
    download printed three)."""
    written = [
        cli("create", tmp_path / "a", sample_tree),
        cli("pack", tmp_path / "a", tmp_path / "a.zip"),
        cli("extract", tmp_path / "a.zip", tmp_path / "x"),
    ]
    for result in written:
        assert result.returncode == 0, result.stderr
        assert result.stdout == "", result.args  # what they say goes to stderr
    for result in (cli("validate", tmp_path / "a.zip"), cli("info", tmp_path / "a.zip")):
        assert result.returncode == 0, result.stderr
        assert result.stdout and all(line.strip() for line in result.stdout.splitlines())


def test_an_archive_warning_is_one_line_of_output(tmp_path):
    source = FIXTURES / "warning" / "W102-unaligned-member" / "archive.zip"
    result = cli("extract", source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "TA-W102" in line]
    assert len(warned) == 1 and warned[0].startswith("warning TA-W102 data/sample/table.csv: ")
    assert "ArchiveWarning" not in result.stderr and ".py:" not in result.stderr


@pytest.mark.parametrize("command", ["download", "create"])
def test_an_existing_destination_is_refused_before_any_work(tmp_path, command):
    """TA-E903 at once: before connecting to a server (here one that is not there: TA-E911
    after it) or registering files (here one Tiled has no adapter for: TA-E901 after it)."""
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "mine.txt").write_text("not an archive")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.unknown-type").write_text("a\n1\n")
    args = {
        "download": ["download", "http://127.0.0.1:9/api/v1", "-o", tmp_path / "existing"],
        "create": ["create", tmp_path / "existing", tmp_path / "in"],
    }[command]
    result = cli(*args)
    assert result.returncode == 1
    assert "TA-E903" in result.stderr, result.stderr
    assert (tmp_path / "existing" / "mine.txt").read_text() == "not an archive"


def zipped_by_info_zip(tmp_path: Path) -> Path:
    """The minimal fixture extracted (so relocated), then zipped by Info-ZIP as a user might
    (``mimetype`` first, all STORED): every member unaligned, every URI relocated."""
    folder = tmp_path / "folder"
    extracted = cli("extract", "-q", FIXTURES / "valid" / "minimal" / "archive.zip", folder)
    assert extracted.returncode == 0, extracted.stderr
    zipped = tmp_path / "zipped.zip"
    subprocess.run(["zip", "-q", "-0", "-X", zipped, "mimetype"], cwd=folder, check=True)
    subprocess.run(
        ["zip", "-q", "-0", "-X", "-r", zipped, ".", "-x", "mimetype"], cwd=folder, check=True
    )
    return zipped


def test_a_report_counts_repeats_and_says_how_to_fix_each_code(tmp_path):
    """An archive re-zipped with Info-ZIP: every member unaligned (TA-W102). The table shows
    three of them and counts the rest; each code found gets its fix once."""
    from tiled_archive.cli.views import ROWS_PER_CODE

    rezipped = zipped_by_info_zip(tmp_path)
    result = cli("validate", rezipped)
    lines = result.stdout.splitlines()
    unaligned = [line for line in lines if "TA-W102" in line and "│" in line]
    members = len(cli("validate", "--json", rezipped).stdout.split('"TA-W102"')) - 1
    assert members > ROWS_PER_CODE + 1
    assert len(unaligned) == ROWS_PER_CODE + 1
    assert f"… and {members - ROWS_PER_CODE} more" in unaligned[-1]
    assert "fix TA-W102: Re-pack with `tiled-archive pack`." in lines


@pytest.mark.parametrize(
    ("args", "code", "hint"),
    [
        (["relocate", FIXTURES / "valid" / "minimal" / "archive.zip"], "TA-E904", "extract"),
        (["create", "{tmp}/out.zip"], "TA-E900", "Name at least one file or folder"),
    ],
)
def test_a_hint_fits_the_case(tmp_path, args, code, hint):
    result = cli(*[str(a).format(tmp=tmp_path) for a in args])
    assert result.returncode == 1
    assert code in result.stderr and hint in result.stderr
    assert "free space" not in result.stderr and "permissions" not in result.stderr


def test_a_zipped_relocated_directory_is_told_to_pack(tmp_path):
    import json

    zipped = zipped_by_info_zip(tmp_path)
    report = json.loads(cli("validate", "--json", zipped).stdout)
    hints = {p["hint"] for p in report["problems"] if p["code"] == "TA-E503"}
    assert hints and all(
        "tiled-archive pack" in h and "run `tiled-archive relocate`" not in h for h in hints
    )


def test_conformance_ends_with_a_summary_and_speaks_json(tmp_path):
    """Two fixtures, one with a wrong expectation: the table ends "FAIL 1 of 2 ...", the JSON
    lists both runs, and the exit status is 1 either way."""
    import json

    for name in ("E601-ragged-null-values", "E602-ragged-offsets-past-data"):
        shutil.copytree(FIXTURES / "invalid" / name, tmp_path / "tree" / "invalid" / name)
    expected = tmp_path / "tree" / "invalid" / "E602-ragged-offsets-past-data" / "expected.json"
    document = json.loads(expected.read_text())
    document["expected"]["directory"] = ["TA-E601"]
    expected.write_text(json.dumps(document))
    table = cli("conformance", tmp_path / "tree")
    assert table.returncode == 1
    assert table.stdout.splitlines()[-1] == "FAIL 1 of 2 fixture forms give exactly their codes"
    as_json = cli("conformance", "--json", tmp_path / "tree")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["passed"], report["failed"]) == (1, 1)
    assert {(r["fixture"], r["passed"]) for r in report["runs"]} == {
        ("invalid/E601-ragged-null-values", True),
        ("invalid/E602-ragged-offsets-past-data", False),
    }


@pytest.mark.parametrize(
    "args",
    [
        [FIXTURES / "valid" / "ragged-duckdb" / "archive"],
        ["--fast", FIXTURES / "valid" / "ragged-duckdb" / "archive.zip"],
        [FIXTURES / "invalid" / "E601-ragged-null-values" / "archive"],
        ["--strict", "--fast", FIXTURES / "warning" / "W102-unaligned-member" / "archive.zip"],
        ["--json", FIXTURES / "invalid" / "E601-ragged-null-values" / "archive"],
        ["nonexist.zip"],
    ],
)
def test_validate_without_typer_says_what_the_typer_command_says(args):
    """`validate` with plain arguments runs without Typer; after `--` Typer parses them and
    calls the same check. Output and exit status are the same (the JSON's timing aside)."""
    *flags, path = args
    plain = cli("validate", *flags, path)
    through_typer = cli("validate", *flags, "--", path)

    def shown(result: subprocess.CompletedProcess) -> tuple:
        text = re.sub(r'"seconds": [0-9.e-]+', '"seconds": 0', result.stdout)
        return result.returncode, text, result.stderr

    assert shown(plain) == shown(through_typer)
    assert plain.returncode in (0, 1, 2) and (plain.stdout or plain.stderr)


def test_validate_with_arguments_typer_must_explain_gets_its_help():
    """Anything but a plain `validate` goes to Typer: -h, an unknown option, two paths."""
    helped = cli("validate", "-h")
    assert helped.returncode == 0 and "--fast" in helped.stdout
    wrong = cli("validate", "--quick", "x")
    assert wrong.returncode == 2 and "No such option" in wrong.stderr
    two = cli("validate", "a", "b")
    assert two.returncode == 2 and "Got unexpected extra argument" in two.stderr


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/api/v1", "http://no-such-host.invalid:8000/api/v1"]
)
def test_an_unreachable_server_fails_at_once(tmp_path, url):
    """Connection refused, or a name that does not resolve: TA-E911 naming the URL within
    seconds, not after Tiled's client's retries (~25 s), and no bare "Retrying…" line."""
    import time

    from tiled_archive.testing import free_port

    url = url.format(port=free_port())
    started = time.monotonic()
    result = cli("download", url, "-o", tmp_path / "out.zip")
    assert time.monotonic() - started < 3
    assert result.returncode == 1
    assert "TA-E911" in result.stderr and url in result.stderr
    assert "Retrying" not in result.stderr and not (tmp_path / "out.zip").exists()
