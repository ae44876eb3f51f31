"""Node-by-node comparison of Tiled clients: an archive's (or a copy's) nodes against the
server's they came from."""

from __future__ import annotations

import contextlib
import io

import awkward as ak
import numpy as np
import pandas as pd


def listing(node):
    """A container's children as Tiled stores them: a composite client lists its tables'
    columns, its ``base`` the table nodes themselves."""
    return getattr(node, "base", node)


def assert_exact(expected, actual, where: str = "/") -> None:
    """``actual`` (an archive's node) equals ``expected`` (the server's), node by node."""
    assert actual.structure_family == expected.structure_family, where
    assert dict(actual.metadata) == dict(expected.metadata), where
    assert list(actual.specs) == list(expected.specs), where
    family = expected.structure_family
    if family == "container":
        keys = list(listing(expected))
        assert list(listing(actual)) == keys, where
        for key in keys:
            assert_exact(listing(expected)[key], listing(actual)[key], f"{where}{key}/")
    elif family == "array":
        assert actual.structure().shape == expected.structure().shape, where
        value, copy = expected.read(), actual.read()
        assert copy.dtype == value.dtype, where
        np.testing.assert_array_equal(copy, value, err_msg=where)
    elif family == "table":
        pd.testing.assert_frame_equal(actual.read(), expected.read(), obj=where)
    elif family == "sparse":
        value, copy = expected.read(), actual.read()
        assert copy.dtype == value.dtype and copy.shape == value.shape, where
        np.testing.assert_array_equal(copy.todense(), value.todense(), err_msg=where)
    elif family == "awkward":
        assert ak.to_list(actual.read()) == ak.to_list(expected.read()), where
        assert str(actual.read().type) == str(expected.read().type), where
    elif family == "ragged":
        assert actual.structure() == expected.structure(), where
        value, copy = expected.read(), actual.read()
        assert copy.dtype == value.dtype and copy.tolist() == value.tolist(), where
        assert actual[1:].tolist() == expected[1:].tolist(), where
    elif family == "bytes":
        assert raw_files(actual) == raw_files(expected), where
    else:
        raise AssertionError(f"{where}: no comparison for {family} yet")


def raw_files(node) -> list[tuple[str, bytes]]:
    """What Tiled's client's ``raw_export()`` gets of a node, in the order of its assets: each
    file's name and bytes. (Several assets are keyed ``<asset id>/<name>``; asset ids are the
    catalog's own numbering, which an archive's catalog does not keep.)"""
    exported: dict = {}
    log = io.StringIO()
    failed: list[str] = []

    def note(response) -> None:  # Tiled's client reads an error's body too late to say it
        if response.is_error:
            response.read()
            failed.append(f"{response.status_code} {response.url}: {response.text[:500]}")

    hooks = node.context.http_client.event_hooks["response"]
    hooks.append(note)
    try:
        with contextlib.redirect_stdout(log):  # its progress console: where it reports failures
            keys = node.raw_export(destination=exported)
    finally:
        hooks.remove(note)
    # raw_export() logs a failed file and goes on (docs/upstream.md): name it, and Tiled's why.
    missing = [key for key in keys if key not in exported]
    assert not missing, f"{missing} not exported: {failed}; Tiled's log:\n{log.getvalue()[-3000:]}"
    multiple = len(node.include_data_sources().data_sources()[0].assets) > 1
    return [(key.split("/", 1)[1] if multiple else key, exported[key].getvalue()) for key in keys]


def below(root, keys):
    node = root
    for key in keys:
        assert list(node) == [key]
        node = node[key]
    return node
