# The README's two commands: `make run` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev browser lint bench bench-sentinel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changed (the stamp is older than it).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Browser tests drive Debian's Chromium (never a downloaded browser build).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	  else \
	    echo "note: /usr/bin/chromium is missing; browser tests will be skipped (sudo apt-get install chromium)"; \
	  fi; \
	fi

run: install
	$(BIN)/comfygate db upgrade
	$(BIN)/comfygate serve

test: install-dev browser
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check src tests bench

bench: install-dev
	$(BIN)/python bench/overhead.py

bench-sentinel: install-dev
	$(BIN)/python bench/sentinel.py
