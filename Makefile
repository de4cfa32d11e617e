# The README's two commands: `make demo` and `make test`.
# Both create .venv when it is missing and install the package (with its dev extras) into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reid_pbn-installed

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/train_net.py --config-file configs/Demo/synthetic_cross_domain.yml

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest tests -q

bench: $(STAMP)
	$(BIN)/python benchmarks/norm_overhead.py
	$(BIN)/python benchmarks/eval_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
