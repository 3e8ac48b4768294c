"""Benchmark next-token logits: unembedding each row's last token only vs every position.

Next-token measures (effects, KL, discovery trials) need one position a row, but a plain forward
unembeds every position: ``batch x pos x vocab`` floats, most of the time and memory of a short
forward on a large vocabulary (Gemma 3: 262k). ``last_only=True`` passes per-row positions to
transformers' ``logits_to_keep``. Reports seconds and peak logits bytes for both, the speedup,
and the largest difference between them.

Usage: ``python benchmarks/bench_last_logits.py [--model gemma3-270m] [--prompts 64]
[--batch 32]``; ``--smoke`` runs a tiny random model in seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from workbench.corpora import load_corpus
from workbench.model.load import Model, load_model
from workbench.steer.forward import steered_logits
from workbench.testing import make_tiny_model


def timed(
    model: Model, texts: list[str], batch: int, last_only: bool
) -> tuple[float, torch.Tensor]:
    began = time.perf_counter()
    out = steered_logits(model, texts, None, batch_size=batch, last_only=last_only)
    seconds = time.perf_counter() - began
    if last_only:
        return seconds, out.logits[:, 0]
    ends = out.mask.sum(1) - 1
    return seconds, out.logits[torch.arange(len(texts)), ends]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, seconds")
    args = parser.parse_args()
    texts = load_corpus("builtin:general", limit=args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            torch.set_num_threads(1)
            model = load_model(str(make_tiny_model(Path(tmp) / "tiny")))
            texts = texts[:8]
        else:
            model = load_model(args.model)
        timed(model, texts[:2], args.batch, True)  # warm up
        full_s, full = timed(model, texts, args.batch, False)
        last_s, last = timed(model, texts, args.batch, True)
    vocab = full.shape[-1]
    longest = max(len(model.tokenizer(t).input_ids) + 1 for t in texts)
    print(
        json.dumps(
            {
                "model": model.name,
                "prompts": len(texts),
                "batch": args.batch,
                "vocab": vocab,
                "full_seconds": round(full_s, 3),
                "last_only_seconds": round(last_s, 3),
                "speedup": round(full_s / last_s, 2),
                "full_logits_bytes_per_batch_up_to": 4 * args.batch * longest * vocab,
                "last_only_logits_bytes_per_batch": 4 * args.batch * vocab,
                "max_abs_difference": float((full - last).abs().max()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
