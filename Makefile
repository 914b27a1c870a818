# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
N ?= 1000

.PHONY: demo test lint format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	touch $@

install: $(BIN)/.installed

## demo: run everything on embedded defaults (SQLite, file-system broker, local SES) until Ctrl-C
demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

## test: the suite on a throwaway PostgreSQL and Redis (installed from Debian if missing)
test: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh $(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var staticfiles
