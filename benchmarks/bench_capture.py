"""Benchmark activation capture on the default model (a script, not a test).

1. Speed: capture at layer 8 over ~4k tokens of ``builtin:general``, against (a) a naive
   full-depth ``model.tl.run_with_cache`` and (b) a plain transformers forward cut to the same
   depth, on the same length-sorted batches. Targets: >= 3x naive, >= 0.8x transformers.
   Checked on the way: the store holds one row per real token, and the rows of the first batch
   are TransformerLens's own ``hook_resid_pre``; the cut-off forward's rows are the truncated
   transformers forward's.
2. Memory: peak RSS growth above the loaded model while capturing N tokens at two layers, each
   size in a fresh process. Target: flat, < 2 GiB.

Usage: ``python benchmarks/bench_capture.py [--tokens 4000] [--memory-tokens 25000,200000]
[--smoke]``

``--smoke`` runs the same code on a tiny random model at layer 1 over a few hundred tokens
(seconds, no targets: toy sizes say nothing about speed). Wrong rows exit non-zero either way.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from child import run_child

from workbench.activations.batches import batches
from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.model.hooks import Site, StopForward, recording
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.testing import make_tiny_model

LAYER = 8
SMOKE_LAYER = 1  # the tiny model has 4 layers
# Capture's default site: layer L is the input of block L, transformers' hidden_states[L].
SITE = "resid_pre"
BATCH = 16
# Two paths through the same float32 forward agree to rounding, not bit for bit; stored rows are
# float16 (about 3 significant digits) on top of that.
RTOL = ATOL = 1e-3
STORED_RTOL = STORED_ATOL = 5e-3


@dataclass
class Batch:
    docs: list[int]  # indices into the documents
    ids: torch.Tensor  # (batch, pos)
    mask: torch.Tensor  # (batch, pos)


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


def _sorted_batches(model: Model, docs: list[str]) -> list[Batch]:
    counts = [
        min(model.n_ctx, len(model.tokenizer(d, add_special_tokens=False)["input_ids"]) + 1)
        for d in docs
    ]
    out = []
    for batch in batches(counts, BATCH):
        ids, mask, _ = model.encode([docs[i] for i in batch])
        out.append(Batch(list(batch), ids, mask))
    return out


def _naive(model: Model, layer: int, batches: list[Batch]) -> None:
    for b in batches:
        _, cache = model.tl.run_with_cache(b.ids, attention_mask=b.mask)
        _ = cache[Site(SITE, layer).tl_name][b.mask.bool()].half()  # (rows, d_model)


def _truncated(model: Model, layer: int, b: Batch) -> torch.Tensor:
    """resid_pre ``layer`` of every real token of ``b``, by a transformers forward cut there."""
    assert model.hf is not None
    inner = model.hf.model
    layers, norm = inner.layers, inner.norm
    # The same depth as the capture (blocks 0..layer-1), and no final norm: last_hidden_state
    # is then resid_pre of block ``layer``.
    inner.layers = torch.nn.ModuleList(list(layers)[:layer])
    inner.norm = torch.nn.Identity()
    try:
        out = inner(input_ids=b.ids, attention_mask=b.mask, use_cache=False)
    finally:
        inner.layers, inner.norm = layers, norm
    return out.last_hidden_state[b.mask.bool()]  # (rows, d_model)


def _transformers(model: Model, layer: int, batches: list[Batch]) -> None:
    for b in batches:
        _ = _truncated(model, layer, b).half()  # (rows, d_model)


def _cut_off(model: Model, layer: int, b: Batch) -> torch.Tensor:
    """resid_pre ``layer`` of every real token of ``b``, the way capture runs the model: a
    recording hook, and the pass stopped once the deepest site has fired."""
    site = Site(SITE, layer)
    with recording(model, [site], backend="hf", stop=True) as rec:
        try:
            assert model.hf is not None
            model.hf(input_ids=b.ids, attention_mask=b.mask, use_cache=False)
        except StopForward:
            pass
        else:
            raise SystemExit("the forward pass ran past the capture site: it should stop there")
    return rec[site][b.mask.bool()]  # (rows, d_model)


def _rate(fn: Callable[[], None], tokens: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return tokens / (time.perf_counter() - start)


def _tokens(batches: list[Batch]) -> int:
    return sum(int(b.mask.sum()) - b.mask.shape[0] for b in batches)  # real tokens, BOS excluded


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_capture: wrong result: {what}")


def _check_store(model: Model, layer: int, store_path: Path, batches: list[Batch]) -> None:
    """One row per real token but BOS, and the first batch's rows are TL's resid_pre."""
    store = ActivationStore.open(store_path)
    _check(store.n_rows == _tokens(batches), f"{store.n_rows} rows for {_tokens(batches)} tokens")
    meta = store.rows_meta()
    X = store.load(layer)  # (rows, d_model) float32 from float16
    first = batches[0]
    with torch.inference_mode():
        _, cache = model.tl.run_with_cache(first.ids, attention_mask=first.mask)
    ref = cache[Site(SITE, layer).tl_name]  # (batch, pos, d_model)
    for row, doc in enumerate(first.docs):
        mine = meta.doc == doc  # (rows,)
        pos = meta.pos[mine]  # (n,)
        n_real = int(first.mask[row].sum())
        _check(pos.tolist() == list(range(1, n_real)), f"document {doc} stored positions {pos}")
        _check(bool((meta.token[mine] == first.ids[row, pos]).all()), f"document {doc} tokens")
        close = torch.allclose(X[mine], ref[row, pos], rtol=STORED_RTOL, atol=STORED_ATOL)
        _check(close, f"document {doc}: stored rows differ from TransformerLens's {SITE}")


def speed(model: Model, layer: int, n_tokens: int, repeats: int, smoke: bool) -> dict[str, float]:
    docs = _docs_with_tokens(model, n_tokens)
    batches = _sorted_batches(model, docs)
    tokens = _tokens(batches)
    # The naive baseline is ~30x slower: time it on every 4th batch (its rate per token).
    naive_batches = batches[::4]
    rates = {"capture": 0.0, "naive run_with_cache": 0.0, "transformers forward": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s"

        def run_capture() -> None:
            capture(model, docs, [layer], site=SITE, out=store, overwrite=True, progress_bar=False)

        runs: dict[str, tuple[Callable[[], None], int]] = {
            "capture": (run_capture, tokens),
            "naive run_with_cache": (
                lambda: _naive(model, layer, naive_batches),
                _tokens(naive_batches),
            ),
            "transformers forward": (lambda: _transformers(model, layer, batches), tokens),
        }
        run_capture()  # warm-up
        _check_store(model, layer, store, batches)
        for _ in range(repeats):  # interleaved, so load from other processes hits all alike
            for name, (fn, n) in runs.items():
                rates[name] = max(rates[name], _rate(fn, n))
    print(
        f"speed: {tokens} tokens ({len(docs)} documents), {model.name} {SITE} {layer}, "
        f"batch {BATCH}, best of {repeats}, {torch.get_num_threads()} threads"
    )
    for name, rate in rates.items():
        print(f"  {name:<22} {rate:8.0f} tokens/s")
    naive = rates["capture"] / rates["naive run_with_cache"]
    hf = rates["capture"] / rates["transformers forward"]
    print(f"  capture / naive        {naive:8.2f}x" + ("" if smoke else "  (target >= 3)"))
    print(f"  capture / transformers {hf:8.2f}x" + ("" if smoke else "  (target >= 0.8)"))
    paired = _paired_forward(model, layer, batches)
    print(
        f"  forward only, alternating batch by batch (robust to load): cut-off capture "
        f"forward / truncated transformers forward {paired:.2f}x"
    )
    print("  rows: one per real token; TransformerLens, transformers and capture agree")
    return {**rates, "ratio_naive": naive, "ratio_transformers": hf, "ratio_forward": paired}


def _paired_forward(model: Model, layer: int, batches: list[Batch]) -> float:
    """Speed ratio of capture's hooked, cut-off forward to the truncated transformers forward,
    timed on alternating batches so that load from other processes hits both alike. Their rows
    must agree."""
    spent = {"capture": 0.0, "transformers": 0.0}
    with torch.inference_mode():
        for b in batches:
            start = time.perf_counter()
            ours = _cut_off(model, layer, b).half()
            spent["capture"] += time.perf_counter() - start
            start = time.perf_counter()
            theirs = _truncated(model, layer, b).half()
            spent["transformers"] += time.perf_counter() - start
            close = torch.allclose(ours.float(), theirs.float(), rtol=RTOL, atol=ATOL)
            _check(close, "the cut-off forward's rows differ from the truncated forward's")
    return spent["transformers"] / spent["capture"]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(model_name: str, layers: list[int], n_tokens: int) -> None:
    """Run in a fresh process: report peak RSS growth while capturing ``n_tokens``."""
    model = load_model(model_name)
    docs = _docs_with_tokens(model, n_tokens)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: allocator pools count as the model
        capture(
            model, docs[: 4 * BATCH], layers, site=SITE, out=Path(tmp) / "w", progress_bar=False
        )
    # Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        result = capture(model, docs, layers, site=SITE, out=Path(tmp) / "s", progress_bar=False)
        peak = _rss_kib("VmHWM")
    print(
        json.dumps(
            {
                "tokens": result.tokens,
                "rows": result.rows,
                "shards": result.shards,
                "base_mib": base / 1024,
                "growth_mib": (peak - base) / 1024,
                "tokens_per_s": result.tokens_per_s,
            }
        )
    )


def _child(args: list[str], smoke: bool) -> dict[str, Any]:
    """This script's ``main`` with ``args`` in a fresh process (in this one when smoking)."""
    return run_child(__file__, main, args, smoke)


def memory(model_name: str, layers: list[int], sizes: list[int], smoke: bool) -> None:
    named = " and ".join(str(layer) for layer in layers)
    print(f"memory: peak RSS growth above the loaded model, capture of {SITE} {named} (fp16)")
    target = "" if smoke else "; target < 2048 MiB, flat"
    child = ["--model", model_name, "--layers", ",".join(map(str, layers))]
    child += ["--smoke"] if smoke else []
    for n in sizes:
        row = _child(["--memory-child", str(n), *child], smoke)
        print(
            f"  {row['tokens']:>8} tokens  {row['shards']:>3} shards  "
            f"model {row['base_mib']:6.0f} MiB  growth {row['growth_mib']:7.1f} MiB  "
            f"({row['tokens_per_s']:.0f} tokens/s{target})"
        )
        _check(row["rows"] == row["tokens"] > 0, f"{row['rows']} rows for {row['tokens']} tokens")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-tokens", default="25000,200000")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds, no targets")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layers", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        torch.set_num_threads(1)  # a tiny model only loses time syncing threads
    if args.memory_child is not None:
        memory_child(args.model, [int(x) for x in args.layers.split(",")], args.memory_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            model_name = str(make_tiny_model(Path(tmp) / "tiny"))
            # One memory size, measured in this process (see _child).
            layer, tokens, repeats, sizes = SMOKE_LAYER, 300, 1, "300"
        else:
            model_name, layer = args.model, LAYER
            tokens, repeats, sizes = args.tokens, args.repeats, args.memory_tokens
        speed(load_model(model_name), layer, tokens, repeats, args.smoke)
        if sizes:
            layers = [layer // 2, layer]
            memory(model_name, layers, [int(x) for x in sizes.split(",")], args.smoke)


if __name__ == "__main__":
    main()
