"""Discovery: dictionary components -> ranked, labelled candidate steering vectors.

Each component ``i`` gives two candidates, ``+c_i`` and ``-c_i`` (unit directions built with
:func:`workbench.vectors.dictionary.from_component`). Every candidate is probed at coefficient
``scale`` in units of the layer's mean residual norm (the vector's ``layer_norms``, so
``--coeff SCALE --units norm`` reproduces it), added at every position:

- ``effect``: mean over the probe prompts (``builtin:neutral_prompts``) of
  ``KL(steered || unsteered)`` of the next token after the prompt, in nats;
- ``damage``: how much worse the steered model predicts held-out neutral text (the last
  ``n_damage`` documents of ``builtin:general``; the norm statistics use its first 32): the mean
  over texts of (steered - unsteered) next-token loss, in nats per token, floored at 0. It is
  the log of the geometric-mean perplexity ratio, reported as ``ppl_ratio``;
- ``score = effect / (damage + eps)``: effect per unit of side effect. Candidates are ranked by it;
- ``top_tokens``: the tokens whose next-token probability rises most, averaged over prompts;
- ``label``: the top 3 logit-lens tokens of the signed direction (cosine ranking, see
  :func:`workbench.decompose.inspect.logit_lens`) and the most common token of its top contexts;
- ``completion``: a greedy continuation of the first probe prompt at ``completion_scale``.

Batching: rows are (candidate, text) pairs, unsteered rows included, run ``batch_size`` rows per
forward pass; one hook (:func:`row_steering`) adds row ``r``'s own vector. (A steering plan
gives every row the same vectors, only the coefficients may differ per row, so one plan per
candidate would need one forward pass per candidate.)

Fitting a dictionary on a store is :func:`workbench.decompose.fit.fit_from_store`; the whole
pipeline behind ``workbench discover`` (capture or reuse a store, fit, probe, rank, write the
output folder atomically) is :func:`workbench.commands.discover.run_discovery`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dictionaries.base import Dictionary
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.inspect import (
    check_store,
    component_codes,
    logit_lens,
    most_common_token,
    top_contexts,
)
from workbench.errors import check
from workbench.io import write_json
from workbench.measure.metrics import next_token_kl, token_logprobs
from workbench.model.hooks import Site, backend_for, hooks_applied
from workbench.model.load import Model
from workbench.steer.forward import encode_inputs, steered_logits
from workbench.steer.generate import generate_rows
from workbench.steer.sampling import Sampling
from workbench.vectors.dictionary import from_component
from workbench.vectors.vector import SteeringVector


@dataclass
class ProbeSettings:
    """How candidates are probed and ranked (see the module docstring for the definitions)."""

    scale: float = 1.0
    completion_scale: float = 0.5
    prompts: str = "builtin:neutral_prompts"
    n_prompts: int = 8
    damage_texts: str = "builtin:general"
    n_damage: int = 8
    damage_max_tokens: int = 32
    max_new_tokens: int = 12
    n_top_tokens: int = 5
    eps: float = 0.01
    batch_size: int = 32
    n_contexts: int = 10

    def __post_init__(self) -> None:
        for name in ("scale", "completion_scale", "eps"):
            value = float(getattr(self, name))
            check(math.isfinite(value) and value > 0, f"{name}={value} must be a positive number")
        for name in ("n_prompts", "n_damage", "max_new_tokens", "n_top_tokens", "batch_size"):
            check(int(getattr(self, name)) >= 1, f"{name}={getattr(self, name)} must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Candidate:
    """One signed component, probed. ``vector`` is saved by :meth:`Discovery.save`."""

    index: int
    sign: int
    label: str
    top_tokens: list[str]
    effect: float
    damage: float
    score: float
    ppl_ratio: float
    completion: str
    lens_tokens: list[str]
    context_token: str | None
    vector: SteeringVector = field(repr=False)
    vector_path: str | None = None
    explained_variance_ratio: float | None = None

    @property
    def name(self) -> str:
        return f"c{self.index:03d}{'pos' if self.sign > 0 else 'neg'}"

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["vector"]
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
    settings: ProbeSettings
    unsteered_completion: str
    mean_norm: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "method": self.method,
            "k": self.k,
            "model": self.model,
            "site": self.site,
            "coefficient": {
                "scale": self.settings.scale,
                "units": "norm",
                "mean_norm": self.mean_norm,
            },
            "definitions": DEFINITIONS,
            "settings": self.settings.to_json(),
            "unsteered_completion": self.unsteered_completion,
            **self.extra,
            "candidates": [c.to_json() for c in self.candidates],
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
                    "damage": c.damage,
                    "score": c.score,
                    "suggested_coeff": self.settings.scale,
                    "units": "norm",
                },
            }
            vec = dataclasses.replace(c.vector, info=info)
            vec.save(folder / "candidates" / f"{c.name}.safetensors")
            c.vector_path = str(where / "candidates" / f"{c.name}.safetensors")
        write_json(folder / "discover.json", self.to_json())


DEFINITIONS = {
    "effect": "mean KL(steered || unsteered) of the next token after each probe prompt, nats",
    "damage": "max(0, mean over held-out neutral texts of steered minus unsteered next-token "
    "loss), nats per token (= log geometric-mean perplexity ratio)",
    "score": "effect / (damage + eps)",
    "top_tokens": "tokens whose next-token probability rises most, mean over probe prompts",
    "label": "top 3 logit-lens tokens of the signed direction (cosine ranking) | most common "
    "token of its top-activating contexts",
}


# --------------------------------------------------------------------------- per-row steering


class RowSteering:
    """Set ``deltas`` ``(rows, *feat)`` before a forward pass: row ``r`` gets ``deltas[r]``."""

    deltas: torch.Tensor | None = None


@contextlib.contextmanager
def row_steering(model: Model, site: Site, backend: str) -> Iterator[RowSteering]:
    """Add a different vector to every batch row at ``site``, at every position.

    The one hook of discovery: position-independent, so it is also right under the KV cache
    of generation (each new token's column gets its row's vector too).
    """
    state = RowSteering()

    def fn(act: torch.Tensor) -> torch.Tensor | None:  # (batch, pos, *feat)
        d = state.deltas
        if d is None:
            return None
        check(d.shape[0] == act.shape[0], f"{d.shape[0]} row vectors for a batch of {act.shape[0]}")
        return act + d.view(d.shape[0], 1, *act.shape[2:]).to(act)

    with hooks_applied(model, [(site, fn)], backend=backend):
        yield state


@dataclass
class _Prober:
    """Runs candidate x text rows through the model under :func:`row_steering`."""

    model: Model
    state: RowSteering
    s: ProbeSettings
    backend: str

    def rows(
        self, deltas: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(cand (b,), text (b,), logits, mask)`` over every (candidate, text) row;
        ``deltas`` is ``(C, *feat)``, ``ids`` and ``mask`` ``(T, pos)``."""
        n_texts, bs = ids.shape[0], self.s.batch_size
        total = deltas.shape[0] * n_texts
        for a in range(0, total, bs):
            r = torch.arange(a, min(a + bs, total))  # (b,)
            cand, text = r // n_texts, r % n_texts
            self.state.deltas = deltas[cand]  # (b, *feat)
            out = steered_logits(
                self.model, (ids[text], mask[text]), backend=self.backend, batch_size=len(r)
            )
            yield cand, text, out.logits, out.mask
        self.state.deltas = None

    def effects(
        self, deltas: torch.Tensor, prompts: list[str]
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Per candidate: mean next-token KL over prompts, and the top promoted tokens."""
        ids, mask = encode_inputs(self.model, prompts)
        last = mask.sum(1) - 1  # (T,)
        zero = torch.zeros(1, *deltas.shape[1:])
        base = torch.cat(
            [lg[torch.arange(len(t)), last[t]] for _, t, lg, _ in self.rows(zero, ids, mask)]
        )  # (T, vocab)
        base_p = torch.softmax(base.double(), -1)  # (T, vocab)
        kl = torch.zeros(deltas.shape[0], dtype=torch.float64)  # (C,)
        shift = torch.zeros(deltas.shape[0], base.shape[-1], dtype=torch.float64)  # (C, vocab)
        for cand, text, logits, _ in self.rows(deltas, ids, mask):
            final = logits[torch.arange(len(text)), last[text]]  # (b, vocab)
            kl.index_add_(0, cand, next_token_kl(final, base[text]))
            shift.index_add_(0, cand, torch.softmax(final.double(), -1) - base_p[text])
        top = shift.topk(self.s.n_top_tokens, dim=-1).indices.tolist()  # (C, n_top)
        tokens = [[self.model.tokenizer.decode([t]) for t in row] for row in top]
        return (kl / len(prompts)).numpy(), tokens

    def damage(self, deltas: torch.Tensor, texts: list[str]) -> np.ndarray:
        """Per candidate: mean over texts of (steered - unsteered) next-token loss, nats/token."""
        ids, mask = encode_inputs(self.model, texts, max_tokens=self.s.damage_max_tokens)

        def losses(d: torch.Tensor) -> torch.Tensor:  # (C', T)
            out = torch.zeros(d.shape[0], len(texts), dtype=torch.float64)
            for cand, text, logits, m in self.rows(d, ids, mask):
                lp = token_logprobs(logits, ids[text, : logits.shape[1]], m).double()  # (b, pos-1)
                count = (m[:, 1:].bool() & m[:, :-1].bool()).sum(1).clamp_min(1)  # (b,)
                out[cand, text] = -lp.sum(1) / count
            return out

        base = losses(torch.zeros(1, *deltas.shape[1:]))  # (1, T)
        return (losses(deltas) - base).mean(1).numpy()  # (C,)

    def completions(self, deltas: torch.Tensor, prompt: str) -> list[str]:
        """One greedy completion of ``prompt`` per row of ``deltas`` ``(C, *feat)``, one batch."""
        n = deltas.shape[0]
        settings = Sampling(max_new_tokens=self.s.max_new_tokens, temperature=0.0, seed=0)
        self.state.deltas = deltas
        try:
            gen = generate_rows(
                self.model, [prompt], [0] * n, [0] * n, None, settings, backend=self.backend
            )
        finally:
            self.state.deltas = None
        return gen.texts


# --------------------------------------------------------------------------- discovery


def _label(index: int, sign: int, lens: list[str], ctx: str | None) -> str:
    words = ", ".join(t.strip() or repr(t) for t in lens[:3])
    tail = f" | ctx {ctx.strip() or repr(ctx)!s}" if ctx else ""
    return f"{'+' if sign > 0 else '-'}{index}: {words}{tail}"


def discover(
    model: Model,
    dictionary: Dictionary,
    store: ActivationStore,
    *,
    layer: int | None = None,
    settings: ProbeSettings | None = None,
) -> Discovery:
    """Probe, label and rank both signs of every component of ``dictionary`` (best first).

    ``store`` is where the dictionary's activations came from (for top contexts); it and the
    dictionary must belong to ``model``. Nothing is saved: see :meth:`Discovery.save`.
    """
    s = settings or ProbeSettings()
    layer = dictionary.info_.layer if layer is None else layer
    check(layer is not None, "the dictionary does not record its layer: pass layer=")
    assert layer is not None
    check_store(dictionary, store, layer)
    check(
        str(store.manifest.get("model")) == model.name,
        f"the store holds activations of {store.manifest.get('model')} but the model is "
        f"{model.name}: use a store captured from {model.name}",
    )
    site = Site(store.site, layer).check(model)
    backend = backend_for(model, [site])
    k = dictionary.n_components_
    signs = [(i, sg) for i in range(k) for sg in (1, -1)]
    vectors = [from_component(dictionary, i, sg, model=model) for i, sg in signs]
    unit = torch.stack([v.directions[layer] for v in vectors])  # (C, *feat)
    norm = vectors[0].layer_norms[layer]

    prompts = load_corpus(s.prompts, limit=s.n_prompts)
    general = load_corpus(s.damage_texts)
    held_out = general[-s.n_damage :] if len(general) > s.n_damage else general
    steer = unit * (s.scale * norm)  # (C, *feat)
    zero = torch.zeros(1, *unit.shape[1:])
    with row_steering(model, site, backend) as state:
        probe = _Prober(model, state, s, backend)
        effect, top_tokens = probe.effects(steer, prompts)
        damage = probe.damage(steer, held_out)
        texts = probe.completions(torch.cat([zero, unit * (s.completion_scale * norm)]), prompts[0])

    codes = component_codes(dictionary, store, layer, range(k))  # (n_rows, k)
    evr = getattr(dictionary, "explained_variance_ratio_", None)
    candidates = []
    for c, (i, sg) in enumerate(signs):
        lens_tokens = (
            [t.token for t in logit_lens(model, unit[c].flatten(), 5, rank="cosine").promoted]
            if site.kind != "z"
            else []
        )
        signed = sg > 0 or bool(np.nanmin(codes[:, i]) < 0)
        ctx = top_contexts(store, codes[:, i], s.n_contexts, largest=sg > 0) if signed else []
        token = most_common_token(ctx)
        dmg = max(0.0, float(damage[c]))
        candidates.append(
            Candidate(
                index=i,
                sign=sg,
                label=_label(i, sg, lens_tokens or top_tokens[c], token),
                top_tokens=top_tokens[c],
                effect=float(effect[c]),
                damage=dmg,
                score=float(effect[c]) / (dmg + s.eps),
                ppl_ratio=float(np.exp(damage[c])),
                completion=texts[c + 1],
                lens_tokens=lens_tokens,
                context_token=token,
                vector=vectors[c],
                explained_variance_ratio=None if evr is None else float(evr[i]),
            )
        )
    candidates.sort(key=lambda cand: (-cand.score, cand.index, -cand.sign))
    return Discovery(
        model=model.name,
        layer=layer,
        site=site.kind,
        method=dictionary.method,
        k=k,
        candidates=candidates,
        settings=s,
        unsteered_completion=texts[0],
        mean_norm=norm,
    )
