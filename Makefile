# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   runs the main job end to end
#   make test   installs into .venv and runs every check CI runs
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# pyproject.toml's classifiers name these too: the suite runs on each (every gate on 3.11 only).
OTHER_PYTHONS := 3.12 3.13

.PHONY: install demo test lint format typecheck pytest pytest-other-pythons docs bench mutation clean

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

test: lint typecheck docs pytest pytest-other-pythons

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

# The test suite alone, on each other Python the package claims, each in its own venv.
.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	$$(.ci/find-python $*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

pytest-python%: .venv-%/.installed
	.venv-$*/bin/pytest -p no:cacheprovider -q

pytest-other-pythons: $(addprefix pytest-python,$(OTHER_PYTHONS))

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: install
	$(BIN)/python -m benchmarks

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml): tens of minutes, so
# not part of `make test`. Narrow it with mutant names: make mutation MUTANTS='fluxgate_async._retry*'
MUTANTS ?=
MUTATION_JOBS ?= 2
$(VENV)/.mutation-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,mutation]'
	touch $@

mutation: $(VENV)/.mutation-installed
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(if $(MUTANTS),'$(MUTANTS)')
	$(BIN)/python .ci/mutation_score.py

clean:
	rm -rf $(VENV) .venv-* .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache site mutants
