"""Discovery: dictionary components -> calibrated, ranked, labelled candidate steering vectors.

Each component ``i`` gives two candidates, ``+c_i`` and ``-c_i``: its model-space decoder
direction (:attr:`dictionaries.base.Dictionary.directions_`, built with
:func:`workbench.vectors.dictionary.from_component`) and its negation. For each:

1. **store-side statistics** (:mod:`~workbench.decompose.component_stats`, no model run): share
   of variance, share of variance *between documents*, how often it fires, the documents at
   each end;
2. **calibration** (:mod:`~workbench.decompose.trials`): the largest coefficient, in units of
   the layer's mean residual norm, at which held-out perplexity stays within the damage budget
   (ratio 1.25 by default). ``suggested_coeff`` is that value: ``workbench steer --units norm
   --coeff SUGGESTED`` reproduces it;
3. **effect at that coefficient**: next-token KL on neutral prompts, the tokens it promotes,
   sampled completions (ActAdd settings, the same noise for every candidate and for the
   unsteered baseline) and the **contrastive words** that rise in them;
4. **controls**: ``n_random`` norm-matched random directions go through the same calibration and
   effect measurement; ``effect_vs_random`` is a candidate's KL over their median KL. A
   candidate no stronger than a random direction at the same damage is **inert**;
5. **ranking** (``rank_by``, see :data:`RANKINGS`): by default ``combined`` = between-document
   share x ``effect_vs_random``, inert candidates last. Why: a concept (topic, sentiment,
   register) is a property of whole documents, so its component varies between documents more
   than within them; and a steering vector is only useful if, within the damage budget, it
   changes the model's output more than a random direction does. Either signal alone ranks
   artefacts first: variance alone finds first-token and punctuation directions, effect alone
   finds directions that push one token;
6. **labels** (:mod:`~workbench.decompose.labels`): contrastive words plus the start of the top
   document; logit-lens tokens are kept as secondary evidence.

Fitting a dictionary on a store (with input hygiene) is
:func:`workbench.decompose.fit.fit_from_store`; the whole pipeline behind ``workbench discover``
is :func:`workbench.commands.discover.run_discovery`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.component_stats import (
    ComponentStats,
    DocExample,
    component_stats,
    doc_mean_codes,
)
from workbench.decompose.inspect import check_store, component_codes, logit_lens
from workbench.decompose.labels import candidate_label, contrastive_words
from workbench.decompose.trials import Calibration, Trials, TrialSettings, row_steering
from workbench.errors import check
from workbench.io import write_json
from workbench.model.hooks import Site, default_backend
from workbench.model.load import Model
from workbench.vectors.dictionary import from_component
from workbench.vectors.probe import auroc
from workbench.vectors.vector import SteeringVector

RANKINGS = ("combined", "between", "effect", "variance", "contrast")


@dataclass
class Candidate:
    """One signed component, calibrated and described. ``vector`` is saved by
    :meth:`Discovery.save` (coefficient 1 = one mean residual norm, ``--units norm``)."""

    index: int
    sign: int
    label: str
    suggested_coeff: float | None
    ppl_ratio: float | None
    capped: bool
    effect: float
    effect_vs_random: float | None
    inert: bool
    score: float
    contrastive_words: list[str]
    completions: list[str]
    top_tokens: list[str]
    lens_tokens: list[str]
    variance_share: float | None
    between_doc_share: float | None
    active_fraction: float | None
    docs: list[DocExample]
    opposite_docs: list[DocExample]
    vector: SteeringVector = field(repr=False)
    vector_path: str | None = None
    concept: dict[str, Any] | None = None
    contrast_auroc: float | None = None

    @property
    def name(self) -> str:
        return candidate_name(self.index, self.sign)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            if f.name == "vector":
                continue
            value = getattr(self, f.name)
            if f.name in ("docs", "opposite_docs"):
                value = [d.to_json() for d in value]
            out[f.name] = value
        return out


@dataclass
class Discovery:
    """Candidates of one dictionary, best first, and how they were made."""

    model: str
    layer: int
    site: str
    method: str
    k: int
    candidates: list[Candidate]
    settings: TrialSettings
    rank_by: str
    unsteered_completions: list[str]
    mean_norm: float
    controls: dict[str, Any]
    hygiene: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def flags(self, c: Candidate) -> list[str]:
        """Warnings about steering with ``c`` at its suggested coefficient, in plain words."""
        return candidate_flags(c, self.settings.damage_budget)

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "layer_convention": Site(self.site, self.layer).convention,
            "method": self.method,
            "k": self.k,
            "model": self.model,
            "site": self.site,
            "coefficient": {"units": "norm", "mean_norm": self.mean_norm},
            "rank_by": self.rank_by,
            "definitions": DEFINITIONS,
            "settings": self.settings.to_json(),
            "input_hygiene": self.hygiene,
            "controls": self.controls,
            "unsteered_completions": self.unsteered_completions,
            **self.extra,
            "candidates": [{**c.to_json(), "flags": self.flags(c)} for c in self.candidates],
        }

    def save(self, folder: Path, record_as: Path | None = None) -> None:
        """Write every candidate's vector to ``folder/candidates/`` and ``discover.json``.

        ``record_as`` is the folder's final location when ``folder`` is a temporary one that
        will be moved there, so the recorded ``vector_path`` values stay valid.
        """
        where = record_as or folder
        (folder / "candidates").mkdir(parents=True, exist_ok=True)
        for c in self.candidates:
            info = {
                **c.vector.info,
                "label": c.label,
                "discover": {
                    "effect": c.effect,
                    "effect_vs_random": c.effect_vs_random,
                    "ppl_ratio": c.ppl_ratio,
                    "inert": c.inert,
                    "score": c.score,
                    "suggested_coeff": c.suggested_coeff,
                    "units": "norm",
                    "damage_budget": self.settings.damage_budget,
                },
            }
            vec = dataclasses.replace(c.vector, info=info)
            vec.save(folder / "candidates" / f"{c.name}.safetensors")
            c.vector_path = str(where / "candidates" / f"{c.name}.safetensors")
        write_json(folder / "discover.json", self.to_json())


def candidate_name(index: int, sign: int) -> str:
    """The one name of component ``index``'s candidate of ``sign``: ``c002pos``, ``c002neg``.

    The table, the label, the saved file and the dashboard all use it.
    """
    return f"c{index:03d}{'pos' if sign > 0 else 'neg'}"


def over_budget(c: Candidate, damage_budget: float) -> bool:
    """True when ``c`` has no coefficient within the budget or its perplexity ratio exceeds it."""
    return c.suggested_coeff is None or (c.ppl_ratio is not None and c.ppl_ratio > damage_budget)


def candidate_flags(c: Candidate, damage_budget: float) -> list[str]:
    """Plain-words warnings shown beside ``c`` (dashboard badge, JSON ``flags``), worst first.

    The first one starts with "over the damage budget" when :func:`over_budget` holds: steering
    with ``c`` at its coefficient is expected to break the model's text.
    """
    out = []
    if c.suggested_coeff is None:
        out.append(
            f"over the damage budget: even the smallest coefficient raises held-out perplexity "
            f"past x{damage_budget:g}"
            + (f" (x{c.ppl_ratio:.3g})" if c.ppl_ratio is not None else "")
        )
    elif over_budget(c, damage_budget):
        out.append(
            f"over the damage budget: perplexity x{c.ppl_ratio:.3g} > x{damage_budget:g} at its "
            "coefficient; expect broken text"
        )
    if c.inert and c.suggested_coeff is not None:
        out.append("inert: no stronger than a random direction at the same damage")
    if c.capped:
        out.append("capped: the search stopped at its largest coefficient")
    return out


DEFINITIONS = {
    "suggested_coeff": "largest coefficient (units: mean residual norm of the layer, as "
    "`workbench steer --units norm`) whose held-out perplexity ratio stays within the damage "
    "budget; null when even the smallest tried coefficient breaks it",
    "ppl_ratio": "held-out perplexity ratio (steered / unsteered, geometric mean over texts) at "
    "suggested_coeff",
    "capped": "the search reached its largest coefficient without crossing the budget",
    "effect": "mean KL(steered || unsteered) of the next token after each neutral prompt at "
    "suggested_coeff, nats",
    "effect_vs_random": "effect over the median effect of norm-matched random directions "
    "calibrated the same way",
    "inert": "effect_vs_random <= 1 (no stronger than a random direction at the same damage), "
    "or no coefficient within the budget",
    "between_doc_share": "share of the component's variance between documents (vs between "
    "tokens of one document); null for one row per document, and with variance_share and "
    "active_fraction null for learned directions (melbo, jacobian: no store)",
    "variance_share": "variance of the component's code over the total variance of the "
    "(scaled) rows it was fitted on",
    "active_fraction": "fraction of rows whose code lies over 2 standard deviations from the mean "
    "in this candidate's direction",
    "score": "the ranking value of rank_by: combined = between_doc_share (variance_share when "
    "null) x effect_vs_random; between, effect, variance = that signal alone; inert candidates "
    "rank last whatever the score",
    "contrastive_words": "words that rise most in steered over unsteered sampled completions of "
    "the same prompts under the same noise",
    "top_tokens": "tokens whose next-token probability rises most, mean over neutral prompts",
    "lens_tokens": "top logit-lens tokens of the direction (cosine ranking), secondary evidence",
    "label": "contrastive words | start of the document where the code is highest for this sign",
    "flags": "warnings in plain words: over the damage budget, inert, capped",
    "contrast_auroc": "with --contrast: how well the candidate's per-document mean code separates "
    "the target corpus (1) from the contrast corpus (0), signed (1.0: points at the target)",
}


def _score(
    rank_by: str,
    stats: ComponentStats | None,
    effect: float,
    vs_random: float | None,
    contrast: float | None,
) -> float:
    if stats is None:  # learned directions (MELBO, Jacobian): no store, rank by effect
        share = 1.0
    elif stats.between_doc_share is not None:
        share = stats.between_doc_share
    else:
        share = stats.variance_share
    strength = vs_random if vs_random is not None else effect
    separation = 0.0 if contrast is None else max(0.0, 2 * contrast - 1)  # 0 chance .. 1 perfect
    value = {
        "combined": share * strength,
        "between": share,
        "effect": strength,
        "variance": share if stats is None else stats.variance_share,
        "contrast": separation * strength,
    }[rank_by]
    return float(value) if math.isfinite(value) else 0.0


@dataclass
class Measured:
    """The model-side numbers of every signed candidate (arrays over candidates)."""

    calibration: Calibration
    effect: np.ndarray
    top_tokens: list[list[str]]
    completions: list[list[str]]
    unsteered: list[str]
    controls: dict[str, Any]


def _control_units(shape: torch.Size, n: int, seed: int) -> torch.Tensor:
    """``(n, *shape)`` random unit directions (seeded)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    return (r / r.flatten(1).norm(dim=1).view(-1, *([1] * len(shape)))).float()


def measure_units(
    model: Model, site: Site, units: torch.Tensor, norm: float, s: TrialSettings
) -> Measured:
    """Calibrate candidates and controls together, then measure effects and completions."""
    prompts = load_corpus(s.prompts, limit=s.n_prompts)
    general = load_corpus(s.damage_texts)
    held_out = general[-s.n_damage :] if len(general) > s.n_damage else general
    n = units.shape[0]
    everyone = torch.cat([units, _control_units(units.shape[1:], s.n_random, s.seed)])
    backend = default_backend(model)
    with row_steering(model, site, backend) as state:
        trials = Trials(model, state, s, backend)
        cal = trials.calibrate(everyone, norm, held_out)
        coeff = np.nan_to_num(cal.coeff, nan=0.0)
        deltas = everyone * torch.from_numpy(coeff * norm).float().view(
            -1, *([1] * (units.dim() - 1))
        )
        effect, top_tokens = trials.effects(deltas, prompts)
        zero = torch.zeros(1, *units.shape[1:])
        texts = trials.completions(torch.cat([zero, deltas[:n]]), prompts[: s.n_completion_prompts])
    ctrl = slice(n, n + s.n_random)
    controls = {
        "kind": "norm-matched random directions, calibrated and measured like the candidates",
        "n": s.n_random,
        "suggested_coeff": [_num(x) for x in cal.coeff[ctrl]],
        "ppl_ratio": [_num(x) for x in cal.ppl_ratio[ctrl]],
        "effect": [float(x) for x in effect[ctrl]],
        "median_effect": float(np.median(effect[ctrl])) if s.n_random else None,
        "calibration_passes": cal.passes,
    }
    return Measured(
        calibration=Calibration(cal.coeff[:n], cal.ppl_ratio[:n], cal.capped[:n], cal.passes),
        effect=effect[:n],
        top_tokens=top_tokens[:n],
        completions=texts[1:],
        unsteered=texts[0],
        controls=controls,
    )


def _checked_layer(
    model: Model, dictionary: Dictionary, store: ActivationStore, layer: int | None
) -> int:
    """The layer to work at; the store, the dictionary and the model must agree on it."""
    layer = dictionary.info_.layer if layer is None else layer
    check(layer is not None, "the dictionary does not record its layer: pass layer=")
    assert layer is not None
    check_store(dictionary, store, layer)
    check(
        str(store.manifest.get("model")) == model.name,
        f"the store holds activations of {store.manifest.get('model')} but the model is "
        f"{model.name}: use a store captured from {model.name}",
    )
    return layer


def build_candidate(
    c: int,
    index: int,
    sign: int,
    vector: SteeringVector,
    model: Model,
    site: Site,
    m: Measured,
    stats: ComponentStats | None,
    s: TrialSettings,
    rank_by: str,
    contrast: float | None,
) -> Candidate:
    """Candidate ``c`` (component ``index``, ``sign``) from the measured and store-side numbers."""
    median_ctrl = m.controls["median_effect"]
    effect = float(m.effect[c])
    vs_random = effect / median_ctrl if median_ctrl else None
    coeff = _num(m.calibration.coeff[c])
    words = contrastive_words(m.completions[c], m.unsteered, s.n_words)
    unit = vector.directions[site.layer].flatten()
    lens = (
        [t.token for t in logit_lens(model, unit, 5, rank="cosine").promoted]
        if site.kind != "z"
        else []
    )
    docs, opposite = stats.docs_for(sign) if stats is not None else ([], [])
    name = candidate_name(index, sign)
    return Candidate(
        index=index,
        sign=sign,
        label=candidate_label(name, words, docs[0].text if docs else None, m.top_tokens[c]),
        suggested_coeff=coeff,
        ppl_ratio=_num(m.calibration.ppl_ratio[c]),
        capped=bool(m.calibration.capped[c]),
        effect=effect,
        effect_vs_random=vs_random,
        inert=coeff is None or (vs_random is not None and vs_random <= 1.0),
        score=_score(rank_by, stats, effect, vs_random, contrast),
        contrast_auroc=contrast,
        contrastive_words=words,
        completions=m.completions[c],
        top_tokens=m.top_tokens[c],
        lens_tokens=lens,
        variance_share=None if stats is None else stats.variance_share,
        between_doc_share=None if stats is None else stats.between_doc_share,
        active_fraction=None
        if stats is None
        else stats.active_fraction["pos" if sign > 0 else "neg"],
        docs=docs,
        opposite_docs=opposite,
        vector=vector,
    )


def _contrast_aurocs(
    store: ActivationStore, codes: np.ndarray, target_docs: np.ndarray
) -> np.ndarray:
    """``(k,)`` AUROC of each component's per-document mean code for target vs other docs."""
    ok = np.isfinite(codes).all(axis=1)
    docs, means = doc_mean_codes(codes[ok], store.rows_meta().doc.numpy()[ok])
    y = np.asarray(target_docs, dtype=bool)[docs].astype(int)
    check(0 < y.sum() < len(y), "a contrastive run needs documents of both corpora in the store")
    return np.array([auroc(means[:, i], y) for i in range(means.shape[1])])


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def discover(
    model: Model,
    dictionary: Dictionary,
    store: ActivationStore,
    *,
    layer: int | None = None,
    settings: TrialSettings | None = None,
    rank_by: str | None = None,
    target_docs: np.ndarray | None = None,
) -> Discovery:
    """Calibrate, describe, label and rank both signs of every component (best first).

    ``store`` is where the dictionary's activations came from (for the store-side statistics and
    documents); it and the dictionary must belong to ``model``. ``target_docs`` (bool per store
    document) marks a contrastive run: candidates get ``contrast_auroc`` (target vs the rest)
    and the default ranking becomes ``contrast`` = separation x effect over random controls.
    Nothing is saved: see :meth:`Discovery.save`.
    """
    s = settings or TrialSettings()
    rank_by = rank_by or ("combined" if target_docs is None else "contrast")
    check(rank_by in RANKINGS, f"unknown ranking {rank_by!r}: use one of {', '.join(RANKINGS)}")
    check(
        rank_by != "contrast" or target_docs is not None,
        "--rank-by contrast needs a contrast corpus: give --contrast CORPUS",
    )
    layer = _checked_layer(model, dictionary, store, layer)
    site = Site(store.site, layer).check(model)
    k = dictionary.n_components_
    codes = component_codes(dictionary, store, layer, range(k))  # (n_rows, k)
    stats = component_stats(dictionary, store, layer, codes)
    contrast = None if target_docs is None else _contrast_aurocs(store, codes, target_docs)
    signs = [(i, sg) for i in range(k) for sg in (1, -1)]
    vectors = [from_component(dictionary, i, sg, model=model) for i, sg in signs]
    units = torch.stack([v.directions[layer] for v in vectors])  # (C, *feat)
    norm = vectors[0].layer_norms[layer]
    m = measure_units(model, site, units, norm, s)
    candidates = [
        build_candidate(
            c,
            i,
            sg,
            vectors[c],
            model,
            site,
            m,
            stats[i],
            s,
            rank_by,
            None if contrast is None else float(contrast[i] if sg > 0 else 1 - contrast[i]),
        )
        for c, (i, sg) in enumerate(signs)
    ]
    return ranked_discovery(
        model,
        site,
        dictionary.method,
        candidates,
        m,
        norm,
        s,
        rank_by,
        hygiene=dictionary.fit_stats_.get("input"),
    )


def ranked_discovery(
    model: Model,
    site: Site,
    method: str,
    candidates: list[Candidate],
    m: Measured,
    norm: float,
    s: TrialSettings,
    rank_by: str,
    *,
    hygiene: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Discovery:
    """The candidates best first (active before inert, then by score) with the run's settings,
    unsteered completions and controls: what every discovery path returns."""
    return Discovery(
        model=model.name,
        layer=site.layer,
        site=site.kind,
        method=method,
        k=len(candidates) // 2,
        candidates=sorted(candidates, key=lambda cd: (cd.inert, -cd.score, cd.index, -cd.sign)),
        settings=s,
        rank_by=rank_by,
        unsteered_completions=m.unsteered,
        mean_norm=norm,
        controls=m.controls,
        hygiene=hygiene,
        extra=extra or {},
    )
