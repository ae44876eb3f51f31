"""The `tiled-archive` command in processes of its own: the entry points, a terminal (width,
progress, Ctrl-C), and what a fresh interpreter prints. Everything else about the command runs
in-process through `main(argv)` (tests/integration/test_cli.py)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import FIXTURES
from ..terminal import under_a_terminal

CLI = [sys.executable, "-m", "tiled_archive.cli"]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_python_dash_m_and_short_help():
    result = subprocess.run(
        [sys.executable, "-m", "tiled_archive", "-h"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0
    assert "validate" in result.stdout and "--version" in result.stdout
    assert "--install-completion" in result.stdout


def test_at_a_terminal_output_fits_its_width():
    status, shown = under_a_terminal(
        "validate", FIXTURES / "invalid" / "E601-ragged-null-values" / "archive", columns=60
    )
    assert status == 1
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).replace("\r", "")
    assert "INVALID" in plain and "1 error" in plain
    assert max(len(line) for line in plain.splitlines()) <= 60


@pytest.mark.slow  # ~10 s of processes of their own: make test-slow
def test_opening_and_creating_say_nothing_of_tileds_server(tmp_path):
    """No "Tiled version ..." banner and no Starlette deprecation warning: neither is ours."""
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tiled_archive, sys\n"
            "with tiled_archive.open(sys.argv[1]) as root: print(list(root))",
            FIXTURES / "valid" / "ragged-duckdb" / "archive.zip",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert opened.returncode == 0 and opened.stdout == "['sample', 'ragged']\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.csv").write_text("a,b\n1,2\n")
    created = run("create", "--quiet", tmp_path / "out.zip", tmp_path / "in")
    assert created.returncode == 0
    for result in (opened, created):
        assert "Tiled version" not in result.stderr, result.stderr
        assert "Warning" not in result.stderr, result.stderr


def test_a_download_without_the_servers_key_says_so(tmp_path):
    """Stock `tiled serve catalog` wanting an API key: none, or a wrong one, is TA-E914 (not a
    traceback, not "cannot reach the server")."""
    from tiled_archive.testing import free_port, serving

    port = free_port()
    tiled = str(Path(sys.executable).parent / "tiled")
    command = [tiled, "serve", "catalog", "--temp", "--api-key", "secret", "--port", port]
    with serving(command, port, log=tmp_path / "server.log") as server:
        for key in ([], ["--api-key", "wrong"]):
            result = run("download", server.url, "-o", tmp_path / "out.zip", *key)
            assert result.returncode == 1, result.stderr
            assert "TA-E914" in result.stderr and "--api-key" in result.stderr
            assert "Traceback" not in result.stderr and not (tmp_path / "out.zip").exists()


def sparse_tiff(path: Path, size: int) -> Path:
    """A valid BigTIFF of about ``size`` bytes of zeros that takes no disk space (a sparse
    file: tifffile writes the header and leaves the image data a hole). Not an .npy: Tiled's
    NPY adapter reads a whole array into memory to register it (docs/upstream.md)."""
    import tifffile

    rows = size // 65536
    image = tifffile.memmap(path, shape=(rows, 65536), dtype="uint8", bigtiff=True)
    del image
    return path


def test_create_shows_each_step_at_once_and_ctrl_c_leaves_nothing(tmp_path):
    big = sparse_tiff(tmp_path / "big.tif", 40 << 30)  # 40 GiB: a minute or more to copy
    dest = tmp_path / "out"
    pressed = []

    def ctrl_c_once_copying(shown: str, process: subprocess.Popen) -> None:
        if not pressed and "copying" in shown and "/s" in shown:  # a rate on the bar
            pressed.append(shown)
            process.send_signal(signal.SIGINT)

    status, shown = under_a_terminal(
        "create", dest, big, columns=120, on_output=ctrl_c_once_copying
    )
    assert pressed, shown
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours and cursor moves
    assert shown.index("loading Tiled") < shown.index("registering 1 source with Tiled")
    assert shown.index("registering") < shown.index("copying")
    assert status == 130 and "interrupted: nothing was written" in shown
    assert "Traceback" not in shown and "Aborted" not in shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]  # no partial output


@pytest.mark.slow  # a long process-level check: make test-slow
def test_download_progress_counts_nodes_and_leaves_cached_bytes_out(tmp_path):
    """At a terminal: the node listing gets a total (``4/4``, not ``4/?``), no empty bar for
    the data API when nothing needs it, and a re-run's files from the cache are named as such
    and not counted as transferred (its rate would be the disk's). Stock Tiled: the per-asset
    path (``tiled-archive serve`` has the archive route, which lists no nodes)."""
    from tiled_archive.testing import free_port, serving, tiled_serve_catalog
    from tiled_archive.writer import convert

    port = free_port()
    extracted = convert(FIXTURES / "valid" / "real-data" / "archive.zip", tmp_path / "served")
    command = tiled_serve_catalog(extracted / "catalog.db", extracted / "data", port, "--public")
    with serving(command, port) as server:
        shown = []
        for name in ("first", "again"):
            status, output = under_a_terminal(
                "download",
                server.url,
                "-o",
                tmp_path / name,
                "--cache-dir",
                tmp_path / "cache",
                columns=120,
            )
            assert status == 0, output
            shown.append(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output))
    for output in shown:
        listed = re.findall(r"listing nodes\W*(\d+)/(\d+|\?)", output)
        assert listed and listed[-1][0] == listed[-1][1] == "4", listed
        assert "data API" not in output
    assert "already cached" not in shown[0]
    assert re.search(r"fetching \([\d.]+ kB already cached\)", shown[1]), shown[1]
