#!/usr/bin/env bash
# GPU check (issue 14): on a CUDA machine, after `make setup TORCH_INDEX=...cu126`, run
#   bash scripts/gpu_check.sh            # cuda, bfloat16 vs cpu, float32; exits non-zero on mismatch
# Extra arguments go to scripts/gpu_check.py (e.g. --dtype float16, --device cuda:1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
timeout 480 "$PY" scripts/gpu_check.py "$@"
# Issue 15's speed target (batched MELBO >= 5x one at a time) can only be met where wider
# batches are nearly free: measure it here too (about a minute on a GPU).
timeout 240 "$PY" benchmarks/bench_melbo.py --device cuda --k 8 --iterations 20
