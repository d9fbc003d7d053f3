# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   runs the main job end to end
#   make test   installs into .venv and runs every check CI runs
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint format typecheck pytest docs screenshots bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard's tests drive Debian's chromium through Playwright; no browser is downloaded.
browser:
	@command -v chromium >/dev/null || \
		(apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 chromium)

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

pytest: install browser
	$(BIN)/coverage erase
	$(BIN)/pytest --cov --cov-report=term-missing

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The docs' pictures of the dashboard and of `report`, taken by the dashboard's browser test.
screenshots: install browser
	FLUXGATE_DOCS_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/collector/test_dashboard_browser.py

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache site build
