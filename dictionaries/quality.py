"""How well a fitted dictionary reconstructs activations, using no model.

:func:`reconstruction_quality` returns a flat dict of JSON-ready numbers. Measures that need the
model (e.g. next-token loss with the reconstruction spliced in) are computed elsewhere and merged
into the same dict: ``{**reconstruction_quality(d, X), **spliced_loss(...)}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictionaries.base import ArrayLike, Dictionary, as_matrix, drop_nonfinite

ACTIVE_THRESHOLD = 1e-8


def reconstruction_quality(
    dictionary: Dictionary, X: ArrayLike, batch_size: int = 4096
) -> dict[str, Any]:
    """Reconstruction numbers for activations ``X`` ``(n, d_model)``.

    Keys:

    - ``fve``: fraction of variance explained, ``1 - SSE / sum ||x - mean(X)||²`` (1 is perfect,
      0 is no better than predicting the mean, negative is worse; None if X has no variance);
    - ``mse``: mean squared error per element, ``SSE / (n * d_model)``;
    - ``l0``: mean number of codes with ``|code| > 1e-8`` per row (about k for PCA and ICA);
    - ``dead_atoms``: number of components never active over ``X``, ``dead_atom_fraction``, and
      ``dead_atom_indices``;
    - ``n_rows``, ``dropped_nonfinite_rows``, ``n_components``.

    Rows holding NaN or inf are dropped with a warning. Work is done ``batch_size`` rows at a
    time, so the codes of all of ``X`` are never held at once.

    >>> import dictionaries, numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 8))
    >>> q = reconstruction_quality(dictionaries.PCA(n_components=8).fit(X), X)
    >>> round(q["fve"], 6)
    1.0
    """
    X_arr = as_matrix(X)
    X_arr, dropped = drop_nonfinite(X_arr)
    dictionary.check_compatible(X_arr.shape[1])
    n, d = X_arr.shape
    k = dictionary.n_components_
    mean = X_arr.mean(axis=0, dtype=np.float64)  # (d,)

    sse = 0.0
    sst = 0.0
    nonzero = 0
    active = np.zeros(k, dtype=bool)  # (k,)
    for start in range(0, n, batch_size):
        batch = X_arr[start : start + batch_size]  # (b, d)
        codes = dictionary.encode(batch)  # (b, k)
        recon = dictionary.decode(codes)  # (b, d)
        err = batch.astype(np.float64) - recon  # (b, d)
        sse += float(np.einsum("ij,ij->", err, err))
        centred = batch.astype(np.float64) - mean  # (b, d)
        sst += float(np.einsum("ij,ij->", centred, centred))
        on = np.abs(codes) > ACTIVE_THRESHOLD  # (b, k)
        nonzero += int(on.sum())
        active |= on.any(axis=0)

    dead = np.flatnonzero(~active)
    return {
        "n_rows": int(n),
        "dropped_nonfinite_rows": int(dropped),
        "n_components": int(k),
        "fve": 1.0 - sse / sst if sst > 0 else None,
        "mse": sse / (n * d),
        "l0": nonzero / n,
        "dead_atoms": int(dead.size),
        "dead_atom_fraction": dead.size / k,
        "dead_atom_indices": [int(i) for i in dead],
    }
