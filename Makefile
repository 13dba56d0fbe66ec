# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The node clients of the conformance and browser tests (tests/clients/package-lock.json).
CLIENTS := tests/clients
NODE_STAMP := $(CLIENTS)/node_modules/.installed

.PHONY: demo test test-sqlite test-postgres lint typecheck format serve schema clean bench \
	bench-statements graphiql-assets

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Installed once, before the two suites start side by side (each suite used to install
# into the same folder and could wipe the other's packages mid-run). Without npm the
# client tests say so and skip (CI requires them).
$(NODE_STAMP): $(CLIENTS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "npm ci in $(CLIENTS)"; \
		(cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error) && touch $@; \
	else \
		echo "npm not found: the node client tests (tests/clients) will be skipped"; \
	fi

demo: $(STAMP)
	$(BIN)/gql-billing demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Both backends at once (their own Stripe emulators and databases): the machine has idle
# cores while one suite waits on HTTP and the database. Each suite's output comes whole.
test: lint typecheck $(NODE_STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

test-sqlite: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -q --durations=15

# The same suite on PostgreSQL when it is reachable (GQL_BILLING_TEST_PG_DSN, default
# postgresql://postgres@127.0.0.1:5432/test); CI sets GQL_BILLING_REQUIRE_POSTGRES=1 so a
# missing server fails the run instead of skipping it.
test-postgres: $(STAMP) $(NODE_STAMP)
	@if PYTHONPATH=tests $(BIN)/python -m support.pg_ready; then \
		GQL_BILLING_TEST_BACKEND=postgresql $(BIN)/pytest -q --durations=15; \
	elif [ -n "$$GQL_BILLING_REQUIRE_POSTGRES" ]; then \
		echo "PostgreSQL is required (GQL_BILLING_REQUIRE_POSTGRES) but not reachable"; exit 1; \
	else \
		echo "PostgreSQL not reachable: the PostgreSQL run is skipped"; \
	fi

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

schema: $(STAMP)
	$(BIN)/gql-billing export-schema schema.graphql

# GraphiQL's files, vendored so the playground works offline: fetched from the npm registry
# (npm pack) in the versions Strawberry's page names, and checked against its integrity hashes.
graphiql-assets: $(STAMP)
	$(BIN)/python -m gql_billing.graphql.playground

# Benchmarks (bench/README.md): about 10 minutes, SQLite then PostgreSQL; never part of
# `make test`. Installs wrk with apt-get when it is missing (needs root; otherwise install it
# yourself).
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || \
		{ apt-get update && apt-get install -y wrk; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The CSV export and balanceHistory on a 1,000,000-entry ledger, SQLite and PostgreSQL (when
# it answers): a few minutes, results in bench/results_statements.json.
bench-statements: $(STAMP)
	$(BIN)/python -m bench.statements $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/clients/node_modules
