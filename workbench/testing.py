"""Tiny randomly initialised models for tests, benchmarks and offline demos.

``make_tiny_model(folder, arch="llama")`` writes a complete transformers model folder (config,
random weights, a small byte-level BPE tokenizer) that :func:`workbench.model.load.load_model` loads
like any local model. It needs no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_TRAINING_TEXT = """
The quick brown fox jumps over the lazy dog. I love you and I hate you.
Weddings, brides and grooms walk down the aisle; the ceremony ends with vows.
Science, cooking, football, history, rain and sunshine, music and law.
Yesterday my neighbour said that the weather today is cold, but tomorrow will be warm.
Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation . , ; : ! ? ' " ( ) - all appear here.
"""


def _tokenizer(vocab_size: int):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|bos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )


def make_tiny_model(
    folder: str | Path,
    *,
    arch: str = "llama",
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    vocab_size: int = 512,
    n_ctx: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny random causal LM (``llama``, ``gpt2`` or ``gemma3``, the block with a norm
    after each branch) with its tokenizer to ``folder``."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    folder = Path(folder)
    tokenizer = _tokenizer(vocab_size)
    vocab = len(tokenizer)
    common = {
        "vocab_size": vocab,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config: Any
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=max(1, n_heads // 2),
            max_position_embeddings=n_ctx,
            tie_word_embeddings=True,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(  # type: ignore[call-arg]
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_positions=n_ctx,
            n_ctx=n_ctx,  # TransformerLens reads the pre-v5 attribute name
            **common,
        )
    elif arch == "gemma3":
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=max(1, n_heads // 2),
            head_dim=d_model // n_heads,
            max_position_embeddings=n_ctx,
            sliding_window=16,
            tie_word_embeddings=True,
            **common,
        )
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: use 'llama', 'gpt2' or 'gemma3'")
    torch.manual_seed(seed)
    config.architectures = [
        {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel", "gemma3": "Gemma3ForCausalLM"}[
            arch
        ]
    ]
    model = AutoModelForCausalLM.from_config(config)
    # Larger-than-default init so random models give peaked, seed-sensitive distributions.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(3.0)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def planted_store(
    path: Path,
    model: Any,
    *,
    layer: int = 1,
    n_docs: int = 60,
    rows_per_doc: int = 8,
    strength: float = 4.0,
    massive: float = 20.0,
    seed: int = 0,
) -> torch.Tensor:
    """Write a store of synthetic rows with a planted document-level property; return its
    unit direction ``(d_model,)``.

    Every row is noise with per-dimension scales spanning two decades; half of the documents
    (alternating) add ``+strength x median noise norm / sqrt(d)`` along the planted direction, the
    other half subtract it; the first row of every document is a "massive activation"
    (``massive`` x the median norm along dimension 0), as on real models' first token. The
    store is ``model``'s (name, width), site ``resid_pre`` at ``layer``, so discovery runs on it.
    """
    from workbench.activations.store import FORMAT, VERSION
    from workbench.activations.writer import RowBatch, StoreWriter
    from workbench.corpora import load_corpus

    g = torch.Generator().manual_seed(seed)
    d = int(model.d_model)
    texts = load_corpus("builtin:general", limit=n_docs)
    n_texts = len(texts)
    scales = torch.logspace(-1, 1, d)  # (d,)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    n = n_texts * rows_per_doc
    doc = torch.arange(n_texts).repeat_interleave(rows_per_doc)  # (n,)
    pos = torch.arange(1, rows_per_doc + 1).repeat(n_texts)  # (n,) BOS is position 0
    X = torch.randn(n, d, generator=g) * scales  # (n, d)
    ref = float(X.norm(dim=1).median())
    sign = torch.where(doc % 2 == 0, 1.0, -1.0)  # (n,)
    X += (sign * strength * ref / d**0.5)[:, None] * u
    X[pos == 1, 0] += massive * ref
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.name,
        "model_info": {},
        "site": "resid_pre",
        "layers": [layer],
        "positions": "all",
        "dtype": "float32",
        "width": d,
        "row_shape": [d],
        "bos": True,
        "backend": "hf",
        "batch_size": 1,
        "shard_rows": 128,
        "max_tokens": None,
        "n_docs": n_texts,
        "corpus": {"source": "planted", "n_docs": n_texts},
        "corpus_sha256": "",
        "truncation": {"limit": 512, "n_truncated": 0, "action": "", "docs": []},
    }
    docs = []
    for i, t in enumerate(texts):
        step = max(1, len(t) // rows_per_doc)
        spans = [[j * step, min(len(t), (j + 1) * step)] for j in range(rows_per_doc)]
        docs.append({"doc": i, "text": t, "n_tokens": rows_per_doc + 1, "offsets": spans})
    writer = StoreWriter.create(path, manifest, docs)
    writer.add(
        RowBatch(
            acts={layer: X},
            doc=doc,
            pos=pos,
            token=torch.zeros(n, dtype=torch.long),
            row_norm=X.norm(dim=1, keepdim=True).double(),
            resid_sum=X.norm(dim=1, keepdim=True).double(),
            resid_count=torch.ones(n, dtype=torch.long),
        )
    )
    writer.finish()
    return u
