# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# no thread variables here: every process sizes its own thread pools from the cores it was
# granted (xrmodifier_hpc/runtime/threads.py), so tests and benchmarks see what users see

.PHONY: setup demo test test-slurm lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh
	@touch $@

# the whole pipeline on the embedded default in demo/ (workdir demo/run): init, simulate (2 MPI
# ranks when MPI works), train, mock, invert, report; ends with the summary table. A rerun
# reuses demo/config.toml and the finished grid and redoes the rest; `rm -rf demo` starts over
demo: setup
	bash tools/demo.sh demo

test: setup
	$(PY) -m pytest -q

# the job recipes on a real one-node Slurm on localhost (needs root, slurm-wlm and munge)
test-slurm: setup
	XRM_SLURM_TESTS=1 $(PY) -m pytest -q tests/slurm tests/test_jobs.py

# ruff (pycodestyle, pyflakes, numpydoc docstrings via pydocstyle) and the import-layer contract
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) tools/check_docstrings.py

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# speed benchmarks: every benchmarks/bench_*.py writes benchmarks/out/*.json, then
# benchmarks/results.py renders benchmarks/RESULTS.md from them. Sherpa (the [bench] extra)
# builds from source: it needs byacc, flex, pkg-config and libfftw3-dev (installed here with
# apt-get when missing), and its build runs `python3` from PATH, hence the venv first on PATH
bench: setup
	@need=""; \
	for c in byacc flex pkg-config; do command -v $$c >/dev/null 2>&1 || need="$$need $$c"; done; \
	pkg-config --exists fftw3 2>/dev/null || need="$$need libfftw3-dev"; \
	if [ -n "$$need" ]; then \
		echo "[bench] installing Debian packages for Sherpa:$$need"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		{ $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$need >/dev/null; } || \
		echo "[bench] apt-get failed: Sherpa may not build and its baseline be skipped"; \
	fi
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pip install -q -e ".[bench]" || \
		echo "bench: the [bench] extra did not install; the Sherpa baseline is skipped"
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done
	$(PY) benchmarks/results.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
