# Each target creates or refreshes the venv under the checkout, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint stress bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@./scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check planner tests bench
	$(BIN)/mypy --strict planner

stress: $(STAMP)
	$(BIN)/python -m pytest -q -m stress -p no:cacheprovider $(PYTEST_FLAGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
