# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export OMP_NUM_THREADS ?= 1

.PHONY: setup test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh
	@touch $@

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
