"""Benchmark activation capture on the default model (a script, not a test).

1. Speed: capture at layer 8 over ~4k tokens of ``builtin:general``, against (a) a naive
   full-depth ``model.tl.run_with_cache`` and (b) a plain transformers forward cut to the same
   depth, on the same length-sorted batches. Targets: >= 3x naive, >= 0.8x transformers.
2. Memory: peak RSS growth above the loaded model while capturing N tokens at two layers, each
   size in a fresh process. Target: flat, < 2 GiB.

Usage: ``python benchmarks/bench_capture.py [--tokens 4000] [--memory-tokens 25000,200000]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workbench.activations.batches import batches
from workbench.activations.capture import capture
from workbench.corpora import load_corpus
from workbench.model.load import Model, load_model

LAYER = 8
BATCH = 16


def _docs_with_tokens(model: Model, n_tokens: int) -> list[str]:
    """Documents of builtin:general (repeated if needed) totalling about ``n_tokens`` tokens."""
    base = load_corpus("builtin:general")
    docs: list[str] = []
    total = 0
    while total < n_tokens:
        for doc in base:
            docs.append(doc)
            total += len(model.tokenizer(doc, add_special_tokens=False)["input_ids"])
            if total >= n_tokens:
                break
    return docs


def _sorted_batches(model: Model, docs: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    counts = [len(model.tokenizer(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs]
    out = []
    for batch in batches(counts, BATCH):
        ids, mask, _ = model.encode([docs[i] for i in batch])
        out.append((ids, mask))
    return out


def _naive(model: Model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for ids, mask in batches:
        _, cache = model.tl.run_with_cache(ids, attention_mask=mask)
        _ = cache[f"blocks.{LAYER}.hook_resid_post"][mask.bool()].half()  # (rows, d_model)


def _transformers(model: Model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    assert model.hf is not None
    inner = model.hf.model
    layers, norm = inner.layers, inner.norm
    # The same depth as the capture, and no final norm: last_hidden_state is resid_post LAYER.
    inner.layers = torch.nn.ModuleList(list(layers)[: LAYER + 1])
    inner.norm = torch.nn.Identity()
    try:
        for ids, mask in batches:
            out = inner(input_ids=ids, attention_mask=mask, use_cache=False)
            _ = out.last_hidden_state[mask.bool()].half()  # (rows, d_model)
    finally:
        inner.layers, inner.norm = layers, norm


def _rate(fn: Callable[[], None], tokens: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return tokens / (time.perf_counter() - start)


def _tokens(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(int(m.sum()) - m.shape[0] for _, m in batches)  # real tokens, BOS excluded


def speed(n_tokens: int, repeats: int) -> dict[str, float]:
    model = load_model()
    docs = _docs_with_tokens(model, n_tokens)
    batches = _sorted_batches(model, docs)
    tokens = _tokens(batches)
    # The naive baseline is ~30x slower: time it on every 4th batch (its rate per token).
    naive_batches = batches[::4]
    rates = {"capture": 0.0, "naive run_with_cache": 0.0, "transformers forward": 0.0}
    with tempfile.TemporaryDirectory() as tmp:

        def run_capture() -> None:
            capture(model, docs, [LAYER], out=Path(tmp) / "s", overwrite=True, progress_bar=False)

        runs: dict[str, tuple[Callable[[], None], int]] = {
            "capture": (run_capture, tokens),
            "naive run_with_cache": (lambda: _naive(model, naive_batches), _tokens(naive_batches)),
            "transformers forward": (lambda: _transformers(model, batches), tokens),
        }
        run_capture()  # warm-up
        for _ in range(repeats):  # interleaved, so load from other processes hits all alike
            for name, (fn, n) in runs.items():
                rates[name] = max(rates[name], _rate(fn, n))
    print(
        f"speed: {tokens} tokens ({len(docs)} documents), layer {LAYER}, batch {BATCH}, "
        f"best of {repeats}, {torch.get_num_threads()} threads"
    )
    for name, rate in rates.items():
        print(f"  {name:<22} {rate:8.0f} tokens/s")
    naive = rates["capture"] / rates["naive run_with_cache"]
    hf = rates["capture"] / rates["transformers forward"]
    print(f"  capture / naive        {naive:8.2f}x  (target >= 3)")
    print(f"  capture / transformers {hf:8.2f}x  (target >= 0.8)")
    paired = _paired_forward(model, batches)
    print(
        f"  forward only, alternating batch by batch (robust to load): cut-off capture "
        f"forward / truncated transformers forward {paired:.2f}x"
    )
    return {**rates, "ratio_naive": naive, "ratio_transformers": hf, "ratio_forward": paired}


def _paired_forward(model: Model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Speed ratio of capture's hooked, cut-off forward to the truncated transformers forward,
    timed on alternating batches so that load from other processes hits both alike."""
    from workbench.activations.capture import _forward, _recording
    from workbench.model.hooks import Site

    spent = {"capture": 0.0, "transformers": 0.0}
    with torch.inference_mode():
        for ids, mask in batches:
            start = time.perf_counter()
            with _recording(model, [Site("resid_post", LAYER)], "hf") as rec:
                _forward(model, "hf", ids, mask)
                _ = rec[Site("resid_post", LAYER)][mask.bool()].half()
            spent["capture"] += time.perf_counter() - start
            start = time.perf_counter()
            _transformers(model, [(ids, mask)])
            spent["transformers"] += time.perf_counter() - start
    return spent["transformers"] / spent["capture"]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(n_tokens: int) -> None:
    """Run in a fresh process: report peak RSS growth while capturing ``n_tokens``."""
    model = load_model()
    docs = _docs_with_tokens(model, n_tokens)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: allocator pools count as the model
        capture(model, docs[: 4 * BATCH], [4, LAYER], out=Path(tmp) / "w", progress_bar=False)
    # Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        result = capture(model, docs, [4, LAYER], out=Path(tmp) / "s", progress_bar=False)
        peak = _rss_kib("VmHWM")
    print(
        json.dumps(
            {
                "tokens": result.tokens,
                "shards": result.shards,
                "base_mib": base / 1024,
                "growth_mib": (peak - base) / 1024,
                "tokens_per_s": result.tokens_per_s,
            }
        )
    )


def memory(sizes: list[int]) -> None:
    print("memory: peak RSS growth above the loaded model, capture at layers 4 and 8 (fp16)")
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  {row['tokens']:>8} tokens  {row['shards']:>3} shards  "
            f"model {row['base_mib']:6.0f} MiB  growth {row['growth_mib']:7.1f} MiB  "
            f"({row['tokens_per_s']:.0f} tokens/s; target < 2048 MiB, flat)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-tokens", default="25000,200000")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    speed(args.tokens, args.repeats)
    if args.memory_tokens:
        memory([int(x) for x in args.memory_tokens.split(",")])


if __name__ == "__main__":
    main()
