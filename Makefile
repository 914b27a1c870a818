# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint format clean bench bench-tracking bench-api bench-callbacks

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	touch $@

install: $(BIN)/.installed

## demo: run everything on embedded defaults (SQLite, file-system broker, local SES) until Ctrl-C
demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

# handlebars.js, so the template parity tests also run against the engine SES templates are
# written for (they are skipped, with a reason, where node or npm is missing).
HANDLEBARS_JS := .cache/js/node_modules/handlebars/package.json
$(HANDLEBARS_JS):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix .cache/js handlebars@4.7 >/dev/null \
	  || echo "handlebars.js could not be installed: its parity tests will be skipped"; \
	else echo "npm not found: the handlebars.js parity tests will be skipped"; fi

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers and the absence of cycles (pyproject.toml)

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var staticfiles

## test: the suite on a throwaway PostgreSQL and Redis (installed from Debian if missing)
test: $(BIN)/.installed $(HANDLEBARS_JS)
	PATH="$(CURDIR)/$(BIN):$$PATH" NODE_PATH="$(CURDIR)/.cache/js/node_modules" \
	  scripts/with-services.sh $(BIN)/pytest -q

## test-fast: the inner loop: the suite less the tests marked worker, browser, e2e or slow (pyproject.toml)
FAST_TESTS := not worker and not browser and not e2e and not slow
test-fast: $(BIN)/.installed $(HANDLEBARS_JS)
	PATH="$(CURDIR)/$(BIN):$$PATH" NODE_PATH="$(CURDIR)/.cache/js/node_modules" \
	  scripts/with-services.sh $(BIN)/pytest -q -m "$(FAST_TESTS)"

## bench: the send benchmark (N recipients, default 1,000,000; SEND_PATH=bulk|rendered)
N ?= 1000000
SEND_PATH ?= bulk
bench: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh \
	  $(BIN)/python bench/send.py --n $(N) --path $(SEND_PATH)

## bench-tracking: opens and clicks through granian (as the Dockerfile runs it), driven by wrk (TRACKING_N recipients, default 100,000; TRACKING_SECONDS of load per endpoint, default 20)
TRACKING_N ?= 100000
TRACKING_SECONDS ?= 20
bench-tracking: $(BIN)/.installed
	NEED_WRK=1 PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh \
	  $(BIN)/python bench/tracking.py --n $(TRACKING_N) --seconds $(TRACKING_SECONDS)

## bench-callbacks: CALLBACKS_N stored events (default 50,000) fanned out and POSTed, signed, to a local receiver by CALLBACKS_WORKERS worker processes (default 4); prints callbacks_per_s. CALLBACKS_WITH_INTAKE=1: the SES event intake (granian, wrk) and the callbacks together for CALLBACKS_SECONDS (default 60; CALLBACKS_RATE paces the intake): intake events/s, callbacks/s, the backlog's slope, the lag
CALLBACKS_N ?= 50000
CALLBACKS_WORKERS ?= 4
CALLBACKS_WITH_INTAKE ?= 0
CALLBACKS_SECONDS ?= 60
CALLBACKS_RATE ?= 0
bench-callbacks: $(BIN)/.installed
ifeq ($(CALLBACKS_WITH_INTAKE),1)
	NEED_WRK=1 PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh \
	  $(BIN)/python bench/callbacks_intake.py --seconds $(CALLBACKS_SECONDS) --workers $(CALLBACKS_WORKERS) \
	    --rate $(CALLBACKS_RATE)
else
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh \
	  $(BIN)/python bench/callbacks.py --n $(CALLBACKS_N) --workers $(CALLBACKS_WORKERS)
endif

## bench-api: POST /api/v1/messages through granian, the transactional worker and SES, driven by wrk (API_SECONDS of load, default 20; then the same while a campaign to API_CAMPAIGN recipients sends, default 200,000, 0 for none)
API_SECONDS ?= 20
API_CAMPAIGN ?= 200000
bench-api: $(BIN)/.installed
	NEED_WRK=1 PATH="$(CURDIR)/$(BIN):$$PATH" scripts/with-services.sh \
	  $(BIN)/python bench/api.py --seconds $(API_SECONDS) --campaign $(API_CAMPAIGN)
