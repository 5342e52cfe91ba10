# Two commands matter on a fresh clone: `make demo` and `make test`; both run setup first.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
TORCH   := torch==2.13.0

.PHONY: setup test test-fast demo bench bench-all clean

setup: $(STAMP)

# torch goes in first, on its own: anything that pulled it later would fetch a CUDA build.
# The bench extra (poselib, a RANSAC backend of benchmarks/bench_peers.py) goes in too, so its test runs,
# and the colmap extra (pycolmap, a CPU wheel needing only numpy) so import colmap / sfm are tested,
# and the scale extra (Ray) so that partitioned maps and the two-node cluster test run, and the viewer
# extra (rerun-sdk, ~170 MB) so that the live-view recordings are tested rather than skipped.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,bench,colmap,scale,viewer]'
	touch $(STAMP)

# Lint and type-check first: they take seconds, the tests minutes. --durations: the 15 slowest tests, so a
# test that grows slow shows in every run.
test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	.venv/bin/lint-imports
	$(PY) -m pytest -q --durations=15

# The same without the end-to-end tests marked slow.
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	.venv/bin/lint-imports
	$(PY) -m pytest -q --durations=15 -m "not slow"

# --force: a second `make demo` replaces the previous run in demo_out/ (reusing its rendered scene);
# `sceneloc demo` on its own refuses to overwrite an earlier run.
demo: setup
	.venv/bin/sceneloc demo --force

# sceneloc beside its peers on redkitchen and the synthetic room (~20 min), then on three folds x two ground
# truths (six more maps, docs/accuracy.md); bench-all: every study (~3 h more)
bench: setup
	$(PY) benchmarks/run_all.py

bench-all: setup
	$(PY) benchmarks/run_all.py --all

clean:
	rm -rf .venv build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
