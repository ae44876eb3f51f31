# Two commands on a fresh machine with python3 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-slow lint bench conformance clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tiled_archive.demo demo-output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# Every tier, on both cores (pytest-xdist, a file per worker at a time: module fixtures run once,
# tests/conftest.py's session fixtures once a run), but the hostile corpus in processes of its
# own and the sweep of what Tiled's client writes (`test-slow`, ~2.5 CPU-minutes: CI runs it
# after this). The slowest 25 are listed.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 -m "not slow"

# Every test marked slow: the hostile corpus read, extracted and served in processes of their
# own (memory-guarded), tests/e2e/test_client_write_sweep.py (every case through every path
# and reader), and the long fault and attack cases of downloads, routes and lazy archives.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

# The inner loop: unit and integration tests, no servers of their own, no PostgreSQL.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests/unit tests/integration -m "not postgres"

bench: $(STAMP)
	$(BIN)/python benchmarks/pack.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/validate.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/remote.py
	$(BIN)/python benchmarks/lazy.py
	$(BIN)/python benchmarks/update.py
	$(BIN)/python benchmarks/many_members.py
	$(BIN)/python benchmarks/zarr_chunks.py

conformance: $(STAMP)
	$(BIN)/tiled-archive conformance conformance/fixtures

clean:
	rm -rf $(VENV) demo-output

# >= 10,000 Hypothesis-mutated archives (tests/fuzz/README.md), and the ragged property tests at
# 200 examples; `make test` runs a small sample of both.
.PHONY: fuzz
fuzz: $(STAMP)
	TILED_ARCHIVE_FUZZ_EXAMPLES=$${TILED_ARCHIVE_FUZZ_EXAMPLES:-2300} \
	TILED_ARCHIVE_FUZZ_OPEN_EXAMPLES=$${TILED_ARCHIVE_FUZZ_OPEN_EXAMPLES:-250} \
	TILED_ARCHIVE_FUZZ_RANDOM=$${TILED_ARCHIVE_FUZZ_RANDOM:-1} \
	$(BIN)/python -m pytest -q tests/fuzz
	TILED_ARCHIVE_RAGGED_EXAMPLES=$${TILED_ARCHIVE_RAGGED_EXAMPLES:-200} \
	$(BIN)/python -m pytest -q tests/integration/test_ragged.py

# 10,000 nodes into PostgreSQL (started by .ci/postgres when TILED_ARCHIVE_TEST_POSTGRES is
# unset) vs `tiled register` through stock serve: ~15 minutes, the anchor most of it.
.PHONY: bench-load
bench-load: $(STAMP)
	$(BIN)/python benchmarks/load.py

# Archives of 1,000 / 10,000 / 100,000 nodes (built once, cached under benchmarks/output/scale/):
# open, search, info, validate, extract, load, download and create against their anchors. About
# an hour on 2 cores, most of it downloads from stock Tiled; `--download-sizes` narrows them.
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py $(SCALE_ARGS)
