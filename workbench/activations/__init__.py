"""Activations captured from a model: corpora in, sharded stores (or small in-memory sets) out.

:mod:`~workbench.activations.capture` runs a corpus through the model into an
:class:`~workbench.activations.store.ActivationStore` (safetensors shards + a JSON manifest,
written by :mod:`~workbench.activations.writer`, batched by :mod:`~workbench.activations.batches`);
:mod:`~workbench.activations.collect` gathers rows for small text sets in memory (what the vector
builders use).
"""

from workbench.activations.capture import CaptureProgress, CaptureResult, capture
from workbench.activations.collect import TextActivations, collect, mean_residual_norms
from workbench.activations.store import ActivationStore, is_store

__all__ = [
    "ActivationStore",
    "CaptureProgress",
    "CaptureResult",
    "TextActivations",
    "capture",
    "collect",
    "is_store",
    "mean_residual_norms",
]
