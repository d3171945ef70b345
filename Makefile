# Two commands on a fresh machine with Python 3.11 and pip: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel here; the GPU image installs a CUDA build instead.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,train]"
	rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(BIN)/descent up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/submit_latency.py
	$(BIN)/python benchmarks/api_memory.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/compare_query.py
	$(BIN)/python benchmarks/job_read_load.py

clean:
	rm -rf $(VENV) .descent .pytest_cache .ruff_cache
