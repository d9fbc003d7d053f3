# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   runs the main job end to end
#   make test   installs into .venv and runs every check CI runs
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second environment with the oldest SDK versions pyproject.toml allows.
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed

# pyproject.toml's classifiers name these too: the suite runs on each (every gate on 3.11 only).
OTHER_PYTHONS := 3.12 3.13

.PHONY: install browser demo test lint format typecheck pytest pytest-newest test-oldest pytest-other-pythons docs screenshots bench mutation clean

# No --quiet on the main install: pip names each package as it goes, so the minute it takes
# the first time shows progress.
$(STAMP): pyproject.toml
	@echo "Installing fluxgate-async and its tools into $(VENV) (about a minute the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard's tests drive Debian's chromium through Playwright; no browser is downloaded.
browser:
	@command -v chromium >/dev/null || \
		(apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 chromium)

$(OLDEST_STAMP): pyproject.toml tests/constraints-oldest.txt
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e '.[openai,anthropic,google,test]' \
		-c tests/constraints-oldest.txt
	touch $(OLDEST_STAMP)

demo: install
	$(BIN)/fluxgate-async demo

# Every gate at once, in one make: the suites spend much of their time waiting on loopback
# servers and child processes, so they and the quick gates share two cores well, and the four
# environments install side by side. The longest part (3.11 with coverage) is named first so
# that it starts first; the oldest-SDK run, whose coverage is added to it, runs beside it.
# --output-sync prints each part's output whole when it ends, so parts never interleave;
# --keep-going runs every part, and make still exits non-zero if any failed.
TEST_JOBS ?= 4
test:
	@echo "Running the suites on 3.11 (with coverage), $(OTHER_PYTHONS), ruff, mypy and the docs" \
		"side by side; each part prints its output when it ends."
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target --keep-going \
		pytest $(addprefix pytest-python,$(OTHER_PYTHONS)) lint typecheck docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

# The integration tests on the oldest SDKs; the code paths only old SDKs take count
# towards the coverage that `pytest` reports. Its data goes to a directory of its own, so that
# it can run beside the suite on the newest SDKs, which erases .coverage* when it starts.
OLDEST_COVERAGE := .coverage-oldest
test-oldest: $(OLDEST_STAMP)
	rm -rf $(OLDEST_COVERAGE)
	mkdir $(OLDEST_COVERAGE)
	COVERAGE_FILE=$(CURDIR)/$(OLDEST_COVERAGE)/.coverage \
		$(OLDEST)/bin/pytest tests/integrations --cov --cov-report= --cov-fail-under=0

# The whole suite on the newest SDKs, with coverage; the gate is checked by `pytest`, below,
# once the oldest-SDK run's coverage is added.
pytest-newest: install browser
	$(BIN)/pytest --cov --cov-report= --cov-fail-under=0

# Both runs, then their coverage added up and checked against fail_under (pyproject.toml).
pytest: pytest-newest test-oldest
	$(BIN)/coverage combine --append $(OLDEST_COVERAGE)/.coverage
	$(BIN)/coverage report

# The test suite alone, on each other Python the package claims, each in its own venv
# (.venv-oldest has a rule of its own above, which make prefers to this pattern).
.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	$$(.ci/find-python $*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

# Kept between runs: without this, make deletes a pattern rule's stamp and reinstalls each time.
.PRECIOUS: .venv-%/.installed

pytest-python%: .venv-%/.installed browser
	.venv-$*/bin/pytest -p no:cacheprovider -q

# Side by side: the suites spend much of their time waiting on loopback servers and child
# processes, so two of them on two cores take little longer than one.
pytest-other-pythons:
	$(MAKE) --no-print-directory -j$(words $(OTHER_PYTHONS)) \
		$(addprefix pytest-python,$(OTHER_PYTHONS))

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The docs' pictures of the dashboard and of `report`, taken by the dashboard's browser test.
screenshots: install browser
	FLUXGATE_DOCS_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/collector/test_dashboard_browser.py

bench: install
	$(BIN)/python -m benchmarks

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml): tens of minutes, so
# not part of `make test`. Narrow it with mutant names: make mutation MUTANTS='fluxgate_async._retry*'
MUTANTS ?=
MUTATION_JOBS ?= 2
$(VENV)/.mutation-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,mutation]'
	touch $@

# mutmut's first pass runs every test in its own process, where the cyclic garbage collector
# has crashed it (a segmentation fault, at a different test from one attempt to the next):
# mutmut runs with it off. Tests that need a collection ask for one.
MUTMUT = $(BIN)/python -c 'import gc; gc.disable(); from mutmut.__main__ import cli; cli()'
mutation: $(VENV)/.mutation-installed
	rm -rf mutants
	$(MUTMUT) run --max-children $(MUTATION_JOBS) $(if $(MUTANTS),'$(MUTANTS)')
	$(BIN)/python .ci/mutation_score.py

clean:
	rm -rf $(VENV) .venv-* .coverage .coverage.* $(OLDEST_COVERAGE) .mypy_cache .pytest_cache .ruff_cache site mutants build
