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

#: Families without files on the server (in memory): read through the data API.
in_memory = MapAdapter(
    {
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
