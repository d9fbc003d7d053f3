# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   runs the main job end to end
#   make test   installs into .venv and runs every check CI runs
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format typecheck pytest docs bench clean

# No --quiet on the main install: pip names each package as it goes, so the minute it takes
# the first time shows progress.
$(STAMP): pyproject.toml
	@echo "Installing fluxgate-async and its tools into $(VENV) (about a minute the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fluxgate-async demo

test: lint typecheck docs pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/coverage erase
	$(BIN)/pytest --cov --cov-report=term-missing

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache site
