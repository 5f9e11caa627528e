# Everything installs itself: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export NO_COLOR := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install lock test lint typecheck unit journey demo bench docs screenshot clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Re-resolve every dependency to the newest versions pyproject.toml allows and pin them.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q -U pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable \
		| grep -v '^snsq2nats'; } > constraints.new && mv constraints.new constraints.txt
	rm -rf .lock-venv

lint: $(STAMP)
	$(BIN)/ruff check snsq2nats tests benchmarks
	$(BIN)/ruff format --check snsq2nats tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# One test worker more than cores (PYTEST_WORKERS=N to choose, 0 runs in this process): most
# tests wait on nats-server, moto and bridge processes, not on the CPU (449 of the slowest tests
# on the loaded 2-core machine: 204 s with 2 workers, 122-156 s with 3, 132 s with 4).
# tests/conftest.py groups the tests (a module's on one worker, a slow parametrized case alone)
# and orders the groups longest first; --no-loadscope-reorder keeps that order (xdist's own
# puts the groups with the most tests first, which started the journey's long modes last).
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(XDIST) --durations=15

test: lint typecheck unit

# The end-to-end journey alone (part of `unit` too), with password and operator (JWT) identities.
journey: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(XDIST) -m journey tests/test_journey.py

demo: $(STAMP)
	$(BIN)/python -m snsq2nats demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# docs/cli.md from every command's --help; tests/test_docs.py fails when it is stale.
docs: $(STAMP)
	$(BIN)/python -m tests.cli_reference

# The HTML plan (with its estate picture) rendered by a real headless browser: Debian's
# chromium, installed on first use. Writes .demo/screenshot/plan.html and plan.png to look at.
SHOTS := .demo/screenshot
CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync
screenshot: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	mkdir -p $(SHOTS)
	$(BIN)/snsq2nats plan --offline --inventory tests/data/mapping/shop_inventory.json \
		--mapping tests/data/mapping/shop_cutover.yaml --report $(SHOTS)/plan.html >/dev/null
	chromium $(CHROMIUM_FLAGS) --user-data-dir=$$(mktemp -d) --window-size=1280,2600 \
		--screenshot=$(CURDIR)/$(SHOTS)/plan.png file://$(CURDIR)/$(SHOTS)/plan.html 2>/dev/null
	test -s $(SHOTS)/plan.png && echo "screenshot: $(SHOTS)/plan.png"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
