"""Properties of the node-by-node comparison behind `diff` and `update` (hypothesis): a
state is the same as itself; swapping the two sides swaps added and removed and names the
same changed nodes with the same kinds; every node is counted once as added, removed,
changed or unchanged, and an unchanged one has the same metadata, structure and file sizes;
a size, then a digest decides, validators only without one, and the size alone without
either."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tiled_archive.reader.diff import FileState, NodeState, compare

files = st.builds(
    FileState,
    size=st.integers(0, 3),
    sha256=st.one_of(st.none(), st.sampled_from(["a" * 64, "b" * 64])),
    etag=st.one_of(st.none(), st.sampled_from(['"1"', '"2"'])),
    last_modified=st.none(),
)
nodes = st.builds(
    NodeState,
    family=st.sampled_from(["array", "table", "container"]),
    metadata=st.dictionaries(st.sampled_from("xyz"), st.integers(0, 2), max_size=3),
    specs=st.just([]),
    structure=st.lists(st.integers(0, 2), max_size=2),
    data=st.dictionaries(st.sampled_from(["data_uri", "/0", "/1"]), files, max_size=2),
)
states = st.dictionaries(st.sampled_from(["a", "a/b", "a/c", "d", "d/e"]), nodes, max_size=5)


@given(states)
def test_a_state_is_the_same_as_itself(state):
    assert compare(state, state).same


@given(states, states)
def test_swapping_sides_swaps_added_and_removed(before, after):
    forward, backward = compare(before, after), compare(after, before)
    assert forward.added == backward.removed and forward.removed == backward.added
    assert [(c.path, c.kinds, c.metadata_keys) for c in forward.changed] == [
        (c.path, c.kinds, c.metadata_keys) for c in backward.changed
    ]
    changed = {c.path for c in forward.changed}
    unchanged = (before.keys() & after.keys()) - changed
    assert len(forward.added) + len(changed) + len(unchanged) == len(after)
    for path in unchanged:
        old, new = before[path], after[path]
        assert (old.family, old.metadata, old.structure) == (
            new.family,
            new.metadata,
            new.structure,
        )
        assert old.data.keys() == new.data.keys()
        assert all(old.data[name].size == new.data[name].size for name in old.data)


def test_a_digest_decides_and_validators_only_without_one():
    same_bytes = FileState(3, "a" * 64, '"1"'), FileState(3, "a" * 64, '"2"')
    assert same_bytes[0].same_as(same_bytes[1])
    assert not FileState(3, "a" * 64, '"1"').same_as(FileState(3, "b" * 64, '"1"'))
    assert FileState(3, None, '"1"').same_as(FileState(3, "a" * 64, '"1"'))
    assert not FileState(3, None, '"1"').same_as(FileState(4, None, '"1"'))
    assert FileState(3, None, None).same_as(FileState(3, None, '"1"'))  # all it can tell
    assert not FileState(3, None, None).same_as(FileState(4, None, None))


def test_values_python_calls_equal_are_told_apart():
    def node(value: object) -> NodeState:
        return NodeState("array", {"x": value}, [], [], {})

    for one, other in ((1, True), (1, 1.0), (0, False)):
        found = compare({"a": node(one)}, {"a": node(other)})
        assert [(c.path, c.kinds, c.metadata_keys) for c in found.changed] == [
            ("a", ("metadata",), ("x",))
        ]
