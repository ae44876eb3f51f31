"""Trees for `tiled serve pyobject tests.trees:NAME` (the stock CLI; tests put the repository
on PYTHONPATH for it)."""

from __future__ import annotations

import numpy as np
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter

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
