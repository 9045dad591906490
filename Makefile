# Two front doors: `make demo` (see the product on synthetic data) and `make test`.
# Each creates .venv and installs what it needs; re-running skips work already done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-data
DEMO_FRAMES ?= 1200
PORT ?= 8501

.PHONY: demo test lint venv clean bench

$(VENV)/.installed-runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The optional Ray executor (`--executor ray`): `make test` installs it, `make demo` does not.
$(VENV)/.installed-ray: requirements-ray.txt $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $@

# Keras on JAX (CPU build): `make test` checks the vectors match TensorFlow's.
$(VENV)/.installed-jax: requirements-jax.txt $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -r requirements-jax.txt
	touch $@

venv: $(VENV)/.installed-dev $(VENV)/.installed-ray $(VENV)/.installed-jax

demo: $(VENV)/.installed-runtime
	$(PY) -m pipeline demo --frames $(DEMO_FRAMES) --out $(DEMO_DIR) --db $(DEMO_DIR)/garden.duckdb --port $(PORT)

# ruff (pinned in requirements-dev.txt, configured in pyproject.toml): lint and format check.
# `ruff format .` and `ruff check --fix .` repair what they report.
lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Tests run in one process per core, up to 4 (pytest-xdist); every Ray test runs in the same
# one (tests/ray/conftest.py). `.venv/bin/python -m pytest -q` runs them all in one process.
test: lint $(VENV)/.installed-ray $(VENV)/.installed-jax
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup

bench: $(VENV)/.installed-dev
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
