"""Property: any tree of payload files survives directory -> ZIP -> directory byte for byte."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiled_archive.catalog import db_file as catalog_db
from tiled_archive.reader import open_archive
from tiled_archive.writer import PayloadFile, convert, write_archive

segment = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="/\\?#%"
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and not s.startswith("."))
relative_path = st.lists(segment, min_size=1, max_size=6).map("/".join)
trees = st.dictionaries(relative_path, st.binary(max_size=3000), min_size=1, max_size=8).filter(
    # A path cannot be both a file and a folder.
    lambda tree: not any(other.startswith(path + "/") for path in tree for other in tree)
)


@pytest.fixture(scope="module")
def empty_catalog(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("catalog") / "catalog.db"
    catalog_db.init_catalog(db, [])
    return db


def write_tree(root: Path, tree: dict[str, bytes]) -> list[PayloadFile]:
    payload = []
    for relative, content in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        payload.append(PayloadFile(f"data/{relative}", len(content), partial(path.open, "rb"), 0))
    return payload


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_random_trees_round_trip_byte_identically(empty_catalog, tree):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        payload = write_tree(work / "src", tree)
        directory = write_archive(
            work / "dir",
            payload,
            lambda entries: empty_catalog,
            created=1_000_000_000,
            fixed_mtime=1_000_000_000,
            force=False,
            quiet=True,
        )
        zipped = convert(directory, work / "a.zip")
        extracted = convert(zipped, work / "back")
        for relative, content in tree.items():
            assert (extracted / "data" / relative).read_bytes() == content
        with open_archive(zipped) as archive:
            for relative, content in tree.items():
                assert archive.read(f"data/{relative}") == content
                span = archive.span(f"data/{relative}")
                assert span.offset % 4096 == 0
        again = convert(extracted, work / "b.zip")
        assert again.read_bytes() == zipped.read_bytes()
        shutil.rmtree(work / "src")
