# CivicEdge — one-command set-up, tests, checks and benchmarks.
# `make test` works on a fresh Debian machine: it creates .venv, installs the project and makes sure the
# services the tests start or use (Mosquitto, VictoriaMetrics, PostgreSQL) are present.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= edge,cloud,field,dev

.PHONY: venv console-assets services test test-fast check bench demo clean

# The console's browser libraries (htmx, uPlot) come from the npm registry, pinned by the lock file; the cloud
# serves them from node_modules and never reaches the internet at run time.
CONSOLE_STAMP := cloud/console/node_modules/.installed
$(CONSOLE_STAMP): cloud/console/package.json cloud/console/package-lock.json
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || { echo "error: npm is missing: sudo apt-get install -y nodejs npm" >&2; exit 1; }
	cd cloud/console && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

console-assets: $(CONSOLE_STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CivicEdge needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP) $(CONSOLE_STAMP)

services:
	@bash tests/ensure_services.sh

test: venv services
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest -m "not slow"

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# the architecture's import rules (pyproject.toml, [tool.importlinter]; docs/architecture.md)
	PYTHONPATH=. $(BIN)/lint-imports --no-cache
	@# firmware: typed against the MicroPython ESP32 stubs, gathered where mypy can read them
	@rm -rf build/mpstubs && mkdir -p build/mpstubs
	@SP=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  cp $$SP/*.pyi build/mpstubs/ && rm -f build/mpstubs/__builtins__.pyi && cp -r $$SP/_mpy_shed build/mpstubs/
	@# each board's main.py separately (they are all "main" on their boards)
	for d in firmware/*/; do MYPYPATH=build/mpstubs:firmware/lib $(BIN)/mypy --config-file firmware/mypy.ini $$d || exit 1; done

bench: venv services
	@bash bench/run.sh

# make demo: a small district (sized for 2 cores); make demo DISTRICT=full: 16,000 covers, 50 gates, 10 towers,
# 20 elevators, gateway outages and broker restarts. Uses Mosquitto when installed, else the embedded broker.
DISTRICT ?= small
demo: venv
	$(BIN)/civicedge sim demo --district $(DISTRICT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
