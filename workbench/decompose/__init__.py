"""Dictionaries fitted to captured activations, inspected, mapped, and turned into candidates.

:mod:`~workbench.decompose.fit` fits a :mod:`dictionaries` backend on a store and scores it on
held-out documents; :mod:`~workbench.decompose.inspect` (top contexts, histograms, logit lens);
:mod:`~workbench.decompose.maps` (UMAP); :mod:`~workbench.decompose.discover` turns components into
ranked, labelled candidate steering vectors.
"""

from workbench.decompose.discover import Candidate, Discovery, discover
from workbench.decompose.fit import evaluate_heldout, fit_from_store, make_dictionary

__all__ = [
    "Candidate",
    "Discovery",
    "discover",
    "evaluate_heldout",
    "fit_from_store",
    "make_dictionary",
]
