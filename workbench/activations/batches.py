"""From a corpus to batches, and from one batch's activations to the rows of a store.

Capture order: documents are taken in chunks of ``CHUNK_DOCS``, sorted longest first within a
chunk (less padding) and cut into batches. The order depends only on the corpus, the tokenizer
and the truncation limit, so an interrupted capture can skip exactly the rows it already stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from workbench.activations.writer import RowBatch
from workbench.errors import WorkbenchError
from workbench.model.load import Model

# Which positions of each text become rows: every token, the last one, or their mean (the same
# choice for a captured store and for a builder's in-memory rows).
ROW_POSITIONS = ("all", "last", "mean")
CHUNK_DOCS = 512  # documents sorted together by length; fixed so row order never depends on batch


def token_counts(model: Model, docs: list[str], first: int, limit: int) -> list[tuple[int, int]]:
    """``(kept, full)`` token counts per document, BOS included."""
    out: list[tuple[int, int]] = []
    for i in range(0, len(docs), CHUNK_DOCS):
        ids = model.tokenizer(docs[i : i + CHUNK_DOCS], add_special_tokens=False)["input_ids"]
        out.extend((min(len(x) + first, limit), len(x) + first) for x in ids)
    return out


def doc_records(model: Model, docs: list[str], first: int) -> Iterator[dict[str, Any]]:
    """``docs.jsonl`` records: text and each token's character span (BOS excluded)."""
    tok = model.tokenizer
    for i in range(0, len(docs), CHUNK_DOCS):
        chunk = docs[i : i + CHUNK_DOCS]
        if getattr(tok, "is_fast", False):
            enc = tok(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for j, (text, offsets) in enumerate(zip(chunk, enc["offset_mapping"], strict=True)):
                spans = [[int(a), int(b)] for a, b in offsets]
                yield {"doc": i + j, "text": text, "n_tokens": len(spans) + first, "offsets": spans}
        else:  # no offsets: show tokens as decoded one by one instead of the original text
            for j, text in enumerate(chunk):
                pieces = [tok.decode([t]) for t in tok(text, add_special_tokens=False)["input_ids"]]
                ends = list(itertools.accumulate(len(p) for p in pieces))
                spans = [[e - len(p), e] for p, e in zip(pieces, ends, strict=True)]
                yield {
                    "doc": i + j,
                    "text": "".join(pieces),
                    "n_tokens": len(spans) + first,
                    "offsets": spans,
                }


def batches(counts: list[int], batch_size: int) -> Iterator[list[int]]:
    """Document indices in capture order: longest first within each chunk, then batched."""
    for start in range(0, len(counts), CHUNK_DOCS):
        chunk = range(start, min(start + CHUNK_DOCS, len(counts)))
        order = sorted(chunk, key=lambda i: (-counts[i], i))
        for b in range(0, len(order), batch_size):
            yield order[b : b + batch_size]


def row_count(lengths: list[int], first: int, positions: str) -> int:
    if positions == "all":
        return sum(max(0, n - first) for n in lengths)
    return sum(1 for n in lengths if n > first)


def select_rows(
    ids: torch.Tensor,  # (batch, pos)
    mask: torch.Tensor,  # (batch, pos)
    doc: torch.Tensor,  # (batch,)
    first: int,
    positions: str,
    dtype: torch.dtype,
    acts: list[torch.Tensor],  # per layer (batch, pos, width) or (batch, pos, n_heads, d_head)
    resid: list[torch.Tensor],  # per layer (batch, pos, d_model)
    layers: list[int],
) -> RowBatch:
    """Select the stored rows of one batch and their provenance and norm sums."""
    keep = mask.bool()  # (batch, pos)
    keep[:, :first] = False  # BOS is never a row
    lengths = mask.sum(1)  # (batch,)
    # where(), not a product: activations at padding are never read, even if not finite.
    tok_norms = torch.stack([torch.where(keep, r.float().norm(dim=-1), 0.0) for r in resid], -1)
    if positions == "all":
        width = ids.shape[1]
        meta = (
            doc[:, None].expand(-1, width)[keep],
            torch.arange(width)[None].expand(len(doc), -1)[keep],
            ids[keep],
        )
        rows = [a.flatten(2)[keep] for a in acts]  # (rows, width)
        resid_sum = tok_norms[keep].double()  # (rows, L)
        resid_count = torch.ones(len(meta[0]), dtype=torch.int64)
    else:
        valid = keep.any(1)  # documents with at least one real token
        last = (lengths - 1).clamp(min=0)
        ar = torch.arange(len(doc))
        if positions == "last":
            meta = (doc[valid], last[valid], ids[ar, last][valid])
            rows = [a.flatten(2)[ar, last][valid] for a in acts]
        else:
            n_real = keep.sum(1, keepdim=True).clamp(min=1)  # (batch, 1)
            minus = torch.full((int(valid.sum()),), -1, dtype=torch.int64)
            meta = (doc[valid], minus, minus.clone())
            rows = [
                (torch.where(keep[..., None], a.flatten(2).float(), 0.0).sum(1) / n_real)[valid]
                for a in acts
            ]  # (docs, width)
        resid_sum = tok_norms.sum(1)[valid].double()  # (docs, L)
        resid_count = keep.sum(1)[valid]
    stored: dict[int, torch.Tensor] = {}
    norms = []
    for layer, r in zip(layers, rows, strict=True):
        r32 = r.float()
        norms.append(r32.norm(dim=-1).double())
        stored[layer] = r32.to(dtype)
        if not bool(torch.isfinite(stored[layer]).all()) and bool(torch.isfinite(r32).all()):
            raise WorkbenchError(
                f"activations at layer {layer} exceed the float16 range; "
                "capture again with --dtype float32 --overwrite"
            )
    return RowBatch(
        acts=stored,
        doc=meta[0].long(),
        pos=meta[1].long(),
        token=meta[2].long(),
        row_norm=torch.stack(norms, -1),
        resid_sum=resid_sum,
        resid_count=resid_count.long(),
    )
