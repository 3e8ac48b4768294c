"""Checking discovery against what a user already knows: labelled concept texts.

``--concepts FILE`` is a JSONL file of ``{"text": ..., "label": ...}`` lines with at least two
labels. For every candidate and every label (one label against the rest):

- ``auroc``: how well the candidate's code, averaged over each text's tokens (rows over the
  fit's norm threshold left out), separates texts of the label from the others, signed: a
  ``+`` candidate scores its code, a ``-`` candidate its negation, so 1.0 means "this candidate
  points at the label" and 0.0 "away from it";
- ``cosine``: cosine between the candidate's steering direction and the labelled mean
  difference (mean activation of the label's texts minus that of the others, same rows).

Each candidate keeps its best label (highest ``auroc``); the report lists, for each label, the
candidate that separates it best and its rank in the discovery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dictionaries.base import Dictionary
from workbench.activations.collect import collect
from workbench.decompose.component_stats import doc_mean_codes
from workbench.decompose.discover import Discovery
from workbench.decompose.hygiene import norm_threshold
from workbench.errors import WorkbenchError, check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.vectors.probe import auroc


@dataclass
class Concepts:
    """Texts and their labels."""

    texts: list[str]
    labels: list[str]

    @property
    def names(self) -> list[str]:
        return sorted(set(self.labels))


def load_concepts(path: str | Path) -> Concepts:
    """Read a JSONL file of ``{"text", "label"}`` lines; one-line errors for every problem."""
    p = Path(path)
    check(p.is_file(), f"--concepts {path}: no such file (give a JSONL file of text and label)")
    texts, labels = [], []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise WorkbenchError(f"--concepts {path} is not UTF-8 text: save it as UTF-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise WorkbenchError(f"--concepts {path} line {n} is not JSON") from None
        check(
            isinstance(rec, dict)
            and isinstance(rec.get("text"), str)
            and isinstance(rec.get("label"), (str, int, bool)),
            f"--concepts {path} line {n} needs a string 'text' and a 'label'",
        )
        if rec["text"].strip():
            texts.append(rec["text"])
            labels.append(str(rec["label"]))
    check(bool(texts), f"--concepts {path} holds no texts")
    found = sorted(set(labels))
    check(
        len(found) >= 2,
        f"--concepts {path} has one label only ({found[0]!r}): give texts of at least two labels",
    )
    return Concepts(texts, labels)


def concept_report(
    model: Model, dictionary: Dictionary, discovery: Discovery, concepts: Concepts
) -> dict[str, Any]:
    """Fill every candidate's ``concept`` field and return the per-label summary."""
    site = Site(discovery.site, discovery.layer)
    acts = collect(model, concepts.texts, [site], positions="all")
    rows = acts.rows[site].flatten(1).float()  # (n_rows, width)
    owner = acts.owner.numpy()  # (n_rows,)
    threshold = norm_threshold(dictionary)
    keep = np.ones(len(owner), dtype=bool)
    if threshold is not None:
        keep = rows.norm(dim=1).numpy() <= threshold
    check(bool(keep.any()), "every concept text is over the fit's norm threshold")
    codes = dictionary.encode(rows[keep].numpy())  # (kept, k)
    covered, text_codes = doc_mean_codes(codes, owner[keep])  # texts with a kept row; (T, k)
    _, text_acts = doc_mean_codes(rows[keep].numpy(), owner[keep])  # (T, width)
    labels = np.asarray(concepts.labels)[covered]
    per_label = {}
    for name in concepts.names:
        y = (labels == name).astype(int)
        if y.min() == y.max():
            continue
        diff = text_acts[y == 1].mean(0) - text_acts[y == 0].mean(0)  # (width,)
        per_label[name] = (y, diff / max(np.linalg.norm(diff), 1e-12))
    ranks = {c.name: r for r, c in enumerate(discovery.candidates, 1)}
    best: dict[str, dict[str, Any]] = {}
    for c in discovery.candidates:
        direction = c.vector.directions[discovery.layer].flatten().double().numpy()
        options: list[dict[str, Any]] = []
        for name, (y, unit) in per_label.items():
            score = auroc(c.sign * text_codes[:, c.index], y)
            cos = float(direction @ unit / max(np.linalg.norm(direction), 1e-12))
            options.append({"label": name, "auroc": score, "cosine": cos})
        if not options:
            continue
        top = max(options, key=lambda o: o["auroc"])
        c.concept = top
        for o in options:
            if o["label"] not in best or o["auroc"] > best[o["label"]]["auroc"]:
                best[o["label"]] = {**o, "candidate": c.name, "rank": ranks[c.name]}
    return {
        "texts": len(covered),
        "labels": concepts.names,
        "best": [best[name] for name in concepts.names if name in best],
    }
