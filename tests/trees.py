"""Trees for `tiled serve pyobject tests.trees:NAME` (the stock CLI; tests put the repository
on PYTHONPATH for it)."""

from __future__ import annotations

import awkward
import numpy as np
import pandas as pd
import ragged
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.awkward import AwkwardAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.ragged import RaggedAdapter
from tiled.adapters.sparse import COOAdapter
from tiled.adapters.table import TableAdapter

#: Arrays stored as one chunk, each over a 1 MB response limit: along the first axis, one row
#: over the limit on its own (cut along the second), and 0-d.
one_chunk = MapAdapter(
    {
        "tall": ArrayAdapter.from_array(np.arange(300_000, dtype="float64").reshape(600, 500)),
        "wide": ArrayAdapter.from_array(np.arange(200_000, dtype="int64").reshape(1, 200_000)),
        "scalar": ArrayAdapter.from_array(np.array(3.5)),
    },
    metadata={"limit": "1 MB"},
)

#: Arrays of every kind of NumPy dtype Tiled serves, in memory (no files: through the data API).
ARRAYS = {
    "datetime": np.array(["2020-01-01T00:00:00.123", "NaT"], dtype="datetime64[ms]"),
    "timedelta": np.array([1, 2], dtype="timedelta64[s]"),
    "complex": np.array([1 + 2j, 3 - 4j], dtype="complex64"),
    "bool": np.array([True, False]),
    "big_endian": np.arange(3, dtype=">u2"),
    "float16": np.arange(3, dtype="float16"),
    "bytes": np.array([b"ab", b"cde"], dtype="S3"),
    "unicode": np.array(["ab", "cd\u00e9"], dtype="U3"),
    "structured": np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "i4"), ("b", "f8")]),
    "zero_d": np.array(7.5),
    "empty": np.zeros((0, 3)),
}

#: Families without files on the server (in memory): read through the data API.
in_memory = MapAdapter(
    {
        "arrays": MapAdapter({key: ArrayAdapter.from_array(a) for key, a in ARRAYS.items()}),
        "sparse": COOAdapter.from_arrays(
            coords=np.array([[0, 2, 4], [1, 3, 0]]), data=np.array([1.5, 2.5, 3.5]), shape=(5, 4)
        ),
        "awkward": AwkwardAdapter.from_array(
            awkward.Array([[{"x": 1, "y": [1.5]}], [], [{"x": 2, "y": []}]])
        ),
        # Two levels of raggedness, int32 (Tiled's own example has one level of float64).
        "ragged": RaggedAdapter.from_array(
            ragged.array([[[1, 2], [3]], [], [[4, 5, 6], [], [7]]], dtype="int32")
        ),
        "table": TableAdapter.from_pandas(
            pd.DataFrame(
                {
                    "seconds": pd.to_datetime([0, 1, 2], unit="s").astype("datetime64[s]"),
                    "utc": pd.to_datetime([0, 1, 2], unit="ms", utc=True),
                    "category": pd.Categorical(["a", "b", "a"]),
                    "nullable": pd.array([1, None, 3], dtype="Int64"),
                    "text": ["x", "yy", ""],
                    "flag": [True, False, True],
                }
            ),
            npartitions=2,
        ),
    }
)
