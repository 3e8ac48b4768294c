"""UMAP maps of activations and of dictionary atoms, saved as data plus a picture.

:func:`activation_map` embeds a sample of store rows in 2-D, coloured by document, by a label
per document (e.g. the topic of a mixed corpus) or by one component's code;
:func:`atom_map` embeds the dictionary's components (cosine metric), coloured by index or by
explained variance. :meth:`Map2D.save` writes ``NAME.json`` (coordinates, colours, settings),
``NAME.csv`` (one point per line) and ``NAME.png`` (matplotlib, Agg backend).

umap-learn is imported lazily (importing it takes seconds, and its first fit in a process
compiles numba code, which takes several more).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.errors import check
from workbench.io import atomic_path

ACTIVATION_COLOURS = ("doc", "label", "component")
ATOM_COLOURS = ("index", "variance")
EXACT_KNN_MAX = 4096  # up to this many points, neighbours come from one distance matrix


@dataclass
class Map2D:
    """Points in 2-D with one colour value (a number or a category name) and a label each."""

    coords: np.ndarray  # (n, 2)
    colour: list[float] | list[str]
    colour_name: str
    labels: list[str]
    ids: list[int]  # store row or component index of each point
    kind: str  # "activations" or "atoms"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> bool:
        return bool(self.colour) and isinstance(self.colour[0], str)

    def to_json(self) -> dict[str, Any]:
        points = [
            {"id": i, "x": float(x), "y": float(y), "colour": c, "label": lab}
            for i, (x, y), c, lab in zip(
                self.ids, self.coords, self.colour, self.labels, strict=True
            )
        ]
        return {
            "kind": self.kind,
            "colour_name": self.colour_name,
            "meta": self.meta,
            "points": points,
        }

    def save(self, folder: str | os.PathLike[str], name: str = "map") -> dict[str, Path]:
        """Write ``name.json``, ``name.csv`` and ``name.png`` into ``folder`` (each atomically)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {ext: out / f"{name}.{ext}" for ext in ("json", "csv", "png")}
        with atomic_path(paths["json"]) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "x", "y", self.colour_name, "label"])
            for i, (x, y), c, lab in zip(
                self.ids, self.coords, self.colour, self.labels, strict=True
            ):
                writer.writerow([i, f"{x:.6g}", f"{y:.6g}", c, lab])
        with atomic_path(paths["png"]) as tmp:
            self._plot(tmp)
        return paths

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
        xy = self.coords
        if self.categorical:
            names = sorted(set(map(str, self.colour)))
            cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
            for j, cat in enumerate(names):
                sel = np.asarray([c == cat for c in self.colour])
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(j % cmap.N), label=cat)
            if len(names) <= 20:
                ax.legend(fontsize=7, markerscale=2, loc="best")
        else:
            sc = ax.scatter(
                xy[:, 0], xy[:, 1], s=8, c=np.asarray(self.colour, float), cmap="viridis"
            )
            fig.colorbar(sc, ax=ax, label=self.colour_name)
        if self.kind == "atoms" and len(self.ids) <= 64:
            for i, (x, y) in zip(self.ids, xy, strict=True):
                ax.annotate(str(i), (x, y), fontsize=6)
        title = self.meta.get("title") or f"UMAP of {self.kind}, coloured by {self.colour_name}"
        ax.set_title(str(title), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)


def _exact_knn(
    X: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray, None] | tuple[None, None, None]:
    """Exact ``k`` nearest neighbours (self first), which UMAP would otherwise compute with
    freshly compiled numba code; returns Nones for metrics other than euclidean and cosine."""
    if metric not in ("euclidean", "cosine"):
        return None, None, None
    A = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
        dist = np.clip(1.0 - A @ A.T, 0.0, None)  # (n, n)
    else:
        sq = (A * A).sum(1)
        dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * A @ A.T, 0.0, None))  # (n, n)
    np.fill_diagonal(dist, 0.0)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]  # (n, k)
    return idx, np.take_along_axis(dist, idx, 1), None


def umap_2d(
    X: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    n_epochs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """UMAP of rows ``X`` ``(n, d)`` to ``(n, 2)``, seeded (so single-threaded)."""
    n = X.shape[0]
    check(n >= 4, f"a UMAP map needs at least 4 points, got {n}")
    check(bool(np.isfinite(X).all()), "the points to map contain NaN or inf: drop those rows")
    import umap

    k = max(2, min(n_neighbors, n - 1))
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs,
        random_state=seed,
        # Spectral initialisation needs a well-connected graph; tiny maps start at random.
        init="spectral" if n >= 64 else "random",
        precomputed_knn=_exact_knn(X, k, metric) if n <= EXACT_KNN_MAX else (None, None, None),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state" and the like
        return np.asarray(reducer.fit_transform(np.asarray(X, dtype=np.float32)), dtype=np.float64)


def activation_map(
    store: ActivationStore,
    layer: int,
    *,
    colour_by: str = "doc",
    doc_labels: Sequence[str] | None = None,
    dictionary: Dictionary | None = None,
    component: int | None = None,
    n: int = 2000,
    seed: int = 0,
    window: int = 4,
    **umap_kw: Any,
) -> Map2D:
    """UMAP of ``n`` random store rows of ``layer`` (all rows if fewer).

    ``colour_by``: ``"doc"`` (document index), ``"label"`` (``doc_labels[doc]``, one name per
    document of the store's corpus, e.g. its topic) or ``"component"`` (the code of
    ``component`` in ``dictionary``). Each point's label is its token in context.
    """
    check(
        colour_by in ACTIVATION_COLOURS,
        f"unknown colour_by {colour_by!r}: use one of {', '.join(ACTIVATION_COLOURS)}",
    )
    store.check_layer(layer)
    rows = store.sample_rows(min(n, store.n_rows), seed=seed).numpy()  # (m,)
    X = store.memmap(layer)[rows].float().numpy()  # (m, width)
    finite = np.isfinite(X).all(axis=1)
    rows, X = rows[finite], X[finite]
    docs = store.rows_meta().doc[rows].numpy()  # (m,)
    colour: list[float] | list[str]
    meta: dict[str, Any] = {
        "layer": layer,
        "site": store.site,
        "model": store.manifest.get("model"),
    }
    if colour_by == "doc":
        colour = [float(d) for d in docs]
    elif colour_by == "label":
        check(doc_labels is not None, "colour_by='label' needs doc_labels (one per document)")
        assert doc_labels is not None
        check(
            len(doc_labels) == int(store.manifest["n_docs"]),
            f"{len(doc_labels)} doc_labels for a store of {store.manifest['n_docs']} documents",
        )
        colour = [str(doc_labels[int(d)]) for d in docs]
    else:
        check(
            dictionary is not None and component is not None,
            "colour_by='component' needs dictionary and component",
        )
        assert dictionary is not None and component is not None
        from workbench.decompose.inspect import check_store

        check_store(dictionary, store, layer)
        check(
            0 <= component < dictionary.n_components_,
            f"component {component} is out of range 0..{dictionary.n_components_ - 1}",
        )
        colour = [float(v) for v in dictionary.encode(X)[:, component]]
        meta.update(method=dictionary.method, component=component)
    coords = umap_2d(X, seed=seed, **umap_kw)
    labels = []
    for r in rows.tolist():
        left, tok, right = store.context(int(r), window)
        labels.append(f"{left}[[{tok}]]{right}")
    name = f"component {component}" if colour_by == "component" else colour_by
    return Map2D(
        coords,
        colour,
        name,
        labels,
        [int(r) for r in rows],
        "activations",
        {**meta, "n_points": len(labels), "seed": seed},
    )


def atom_map(
    dictionary: Dictionary, *, colour_by: str = "index", seed: int = 0, **umap_kw: Any
) -> Map2D:
    """UMAP of the dictionary's components (cosine metric; a direction and its negation differ).

    ``colour_by``: ``"index"`` or ``"variance"`` (``explained_variance_ratio_``, PCA only).
    """
    check(colour_by in ATOM_COLOURS, f"unknown colour_by {colour_by!r}: use index or variance")
    comps = np.asarray(dictionary.directions_, dtype=np.float64)  # (k, width) model space
    k = comps.shape[0]
    colour: list[float]
    if colour_by == "variance":
        evr = getattr(dictionary, "explained_variance_ratio_", None)
        check(evr is not None, f"a {dictionary.method} dictionary has no explained variance")
        colour = [float(v) for v in np.asarray(evr)]
    else:
        colour = [float(i) for i in range(k)]
    umap_kw.setdefault("metric", "cosine")
    coords = umap_2d(comps, seed=seed, **umap_kw)
    info = dictionary.info_
    meta = {
        "method": dictionary.method,
        "layer": info.layer,
        "site": info.site,
        "model": info.model,
        "n_points": k,
        "seed": seed,
    }
    labels = [f"component {i}" for i in range(k)]
    return Map2D(coords, colour, colour_by, labels, list(range(k)), "atoms", meta)
