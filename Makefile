# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export OMP_NUM_THREADS ?= 1

.PHONY: setup test test-slurm lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh
	@touch $@

test: setup
	$(PY) -m pytest -q

# the job recipes on a real one-node Slurm on localhost (needs root, slurm-wlm and munge)
test-slurm: setup
	XRM_SLURM_TESTS=1 $(PY) -m pytest -q tests/slurm tests/test_jobs.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# speed benchmarks: every benchmarks/bench_*.py, results in benchmarks/out/. Sherpa (the
# [bench] extra) builds from source: it needs byacc, flex, pkg-config and libfftw3-dev, and
# its build runs `python3` from PATH, hence the venv first on PATH
bench: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pip install -q -e ".[bench]" || \
		echo "bench: the [bench] extra did not install; the Sherpa baseline is skipped"
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
