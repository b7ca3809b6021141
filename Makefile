# backupctl — the two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# In CI (CI=true) a skipped test is a failure: nothing the machine can run may be skipped.
STRICT := $(if $(filter true 1,$(CI)),1,0)
PYTEST_ARGS ?=

.PHONY: help install system-deps images demo test lint unit bench clean

help:
	@echo "make demo    back up the sample shop, verify, restore, drill it, print where the report is"
	@echo "make test    lint (ruff, mypy) and run unit, integration and end-to-end tests"
	@echo "make images  build the drill staging images from Debian packages (no registry needed; IMAGES=\"postgres-13 mariadb-10.5\" for older majors)"
	@echo "make bench   benchmarks vs pg_dump/pg_restore, boto3, restic (BENCH=spine,offsite; not in make test)"

system-deps:
	@scripts/install-system-deps.sh

$(BIN)/backupctl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# An editable install gets no bytecode from pip, and PYTHONDONTWRITEBYTECODE may be set:
	@# compile once so every CLI run does not recompile ~100 modules (~0.2 s per start).
	$(BIN)/python -m compileall -q backupctl
	@touch $(BIN)/backupctl

install: system-deps $(BIN)/backupctl

images: install
	bash docker/build-images.sh $(IMAGES)

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check backupctl tests scripts docker
	$(BIN)/mypy backupctl

unit: install
	$(BIN)/pytest tests/unit -q

test: lint
	BACKUPCTL_TEST_STRICT=$(STRICT) $(BIN)/pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python tests/benchmarks/run.py

clean:
	rm -rf .demo .bench .pytest_cache .mypy_cache .ruff_cache
