"""The work folder of a lazy archive on its own (no server): what it counts as held, and what
it refuses to follow."""

from __future__ import annotations

import pytest

from tiled_archive.rules.problems import ArchiveError
from tiled_archive.sources.lazy.origin import Absent
from tiled_archive.sources.lazy.work import BLOCK, WorkFolder


def test_blocks_a_file_cannot_have_do_not_make_it_whole(tmp_path):
    work = WorkFolder(tmp_path / "work")
    file = Absent("data/a.h5", 3 * BLOCK, None, "asset/bytes/a?id=1")
    partial = work.partial_path(file.path)
    partial.write_bytes(b"\0" * file.size)
    work._sql(
        "INSERT INTO block VALUES (?, ?), (?, ?), (?, ?)", file.path, 0, file.path, 7, file.path, 9
    )
    assert not work.is_whole(file)  # three rows, but blocks 1 and 2 were never fetched
    work._sql("INSERT INTO block VALUES (?, ?), (?, ?)", file.path, 1, file.path, 2)
    assert work.is_whole(file)


def test_a_symlinked_partial_file_holds_nothing(tmp_path):
    work = WorkFolder(tmp_path / "work")
    (tmp_path / "victim").write_bytes(b"x" * 10)
    work.partial_path("data/a").symlink_to(tmp_path / "victim")
    work._sql("INSERT INTO block VALUES (?, ?)", "data/a", 0)
    assert work.blocks("data/a") == set()


@pytest.mark.parametrize("name", ["", "partial", "tmp", "state.db"])
def test_links_in_the_work_folder_are_refused(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "work"
    if name:
        folder.mkdir()
    (folder / name if name else folder).symlink_to(outside)
    with pytest.raises(ArchiveError, match="TA-E203"):
        WorkFolder(folder)
    assert not list(outside.iterdir())


def test_a_state_that_is_not_a_database_is_begun_afresh(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "state.db").write_bytes(b"garbage" * 1000)
    assert WorkFolder(folder).used_bytes() == 0
