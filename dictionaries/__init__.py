"""Decomposition backends: activations -> directions (``components_``) and codes.

Every backend follows the scikit-learn contract described in :mod:`dictionaries.base` and is
found by name through :mod:`dictionaries.registry`::

    import dictionaries
    pca = dictionaries.create("pca", n_components=16).fit(X)
    pca.save("runs/pca")
    same = dictionaries.load("runs/pca")

Fit in a scaled space with ``fit(X, scaler=InputScaler("standardize"))``; ``directions_`` are then
the model-space decoder directions to steer with (:mod:`dictionaries.scaling`).

Backends: ``pca``, ``ica`` (:mod:`dictionaries.linear`), ``dictlearn``
(:mod:`dictionaries.sparse`), ``sae`` and ``pretrained-sae`` (:mod:`dictionaries.pretrained`).
"""

from dictionaries.base import Dictionary, DictionaryInfo
from dictionaries.linear import ICA, PCA
from dictionaries.pretrained import PretrainedSAE
from dictionaries.quality import reconstruction_quality
from dictionaries.registry import available, create, get, load, register
from dictionaries.sae import SparseAutoencoder
from dictionaries.scaling import SCALES, InputScaler
from dictionaries.sparse import DictLearn

__all__ = [
    "ICA",
    "SCALES",
    "InputScaler",
    "PCA",
    "DictLearn",
    "Dictionary",
    "DictionaryInfo",
    "PretrainedSAE",
    "SparseAutoencoder",
    "available",
    "create",
    "get",
    "load",
    "reconstruction_quality",
    "register",
]
