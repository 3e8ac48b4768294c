"""Running the model to measure what steering does: effects, side effects and controls.

The pure math lives in :mod:`workbench.measure.metrics`, :mod:`workbench.measure.text_metrics` and
:mod:`workbench.measure.stats`; this module runs the model to get the numbers it needs, for many
*conditions* at once. A :class:`Condition` gives one coefficient per plan entry (0 = off), or
puts a text in front of every prompt instead (the token-injection baseline). All conditions
share one batch per measure (rows = condition x text, each row with its own coefficients), so a
whole coefficient sweep costs one batched scoring pass and one batched ``generate`` call.

Measures (per condition, per sample, compared with the unsteered baseline):

* ``on_target_ratio`` / ``off_target_ratio``: per-sentence perplexity, steered / unsteered, on
  on-target text (ActAdd's wedding sentences; below 1 is the wanted effect) and off-target text
  (above 1 is damage). For prompt-aligned vectors at the front, each sentence is preceded by
  space tokens the vector lands on, as in ActAdd's comparison with prompting, so the vector never
  overwrites a scored token; only the sentence's own tokens are scored.
* ``kl`` and ``entropy``: next-token ``KL(steered || unsteered)`` and entropy at the end of
  neutral prompts, with the tokens contributing most to the KL (ActAdd's KL-contributor table).
* ``target_logprob_shift:NAME``: change in ``log P(next token is a target)`` after each prompt.
* from sampled completions (``n`` per prompt, the same sampling noise in every condition):
  ``target_words:NAME`` (words per completion), ``sentiment`` (VADER), ``distinct2`` and
  ``repetition`` (degeneration).

Every measure is reported with a bootstrap interval over its samples (sentences, prompts,
prompt x seed rows), and completion measures also as paired differences from the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from workbench.errors import check
from workbench.measure.controls import (
    DEFAULT_CONTROLS,
    Control,
    against_controls,
    matched_controls,
    specificity,
)
from workbench.measure.metrics import (
    distinct_n,
    next_token_entropy,
    next_token_kl,
    repetition_rate,
    sentiment,
    target_logprob_shift,
    target_word_rate,
)
from workbench.measure.runs import (
    completions,
    front_pad,
    last_token_logits,
    sentence_perplexities,
)
from workbench.measure.spec import (
    DEFAULT_NEUTRAL,
    DEFAULT_OFF_TARGET,
    DEFAULT_PROMPTS,
    EFFECT_KINDS,
    Condition,
    EffectSpec,
    MeasureSpec,
    Targets,
    actadd_sampling,
    default_effect,
    injection_text,
    parse_words,
    target_set,
    vector_at_layer,
)
from workbench.measure.stats import Estimate, estimate
from workbench.model.load import Model
from workbench.steer.plan import PlanEntry
from workbench.vectors.build import random_like
from workbench.vectors.vector import SteeringVector

__all__ = [
    "DEFAULT_NEUTRAL",
    "DEFAULT_OFF_TARGET",
    "DEFAULT_PROMPTS",
    "EFFECT_KINDS",
    "Baseline",
    "Condition",
    "ConditionResult",
    "EffectSpec",
    "MeasureSpec",
    "Targets",
    "actadd_sampling",
    "completions",
    "control_effect_key",
    "control_spec",
    "controls_for",
    "run_controls",
    "specificity_of",
    "default_effect",
    "front_pad",
    "injection_text",
    "kl_top_tokens",
    "last_token_logits",
    "measure",
    "measure_vector",
    "result_summary",
    "parse_words",
    "sentence_perplexities",
    "target_set",
    "vector_at_layer",
]

# --------------------------------------------------------------------------- results


@dataclass
class Baseline:
    """The unsteered run's raw numbers, to compare later conditions with (see :func:`measure`)."""

    on_ppl: np.ndarray | None
    off_ppl: np.ndarray | None
    neutral_logits: torch.Tensor | None  # (n_neutral, vocab)
    prompt_logits: torch.Tensor | None  # (n_prompts, vocab)
    rows: dict[str, np.ndarray]
    completions: list[str]


@dataclass
class ConditionResult:
    """Every measure of one condition, per sample, plus the top KL contributors."""

    condition: Condition
    rows: dict[str, np.ndarray]
    deltas: dict[str, np.ndarray]
    kl_top: list[dict[str, Any]]
    completions: list[str]

    def estimate(self, key: str, seed: int = 0) -> Estimate:
        """Bootstrap estimate of measure ``key`` over its samples."""
        check(key in self.rows, f"measure '{key}' was not taken; measured: {sorted(self.rows)}")
        return estimate(self.rows[key], seed=seed)

    def delta(self, key: str, seed: int = 0) -> Estimate:
        """Paired estimate of ``key`` minus the baseline (the measure itself when it is already
        relative: ratios, shifts, KL)."""
        if key in self.deltas:
            return estimate(self.deltas[key], seed=seed)
        return self.estimate(key, seed)

    def summary(self, seed: int = 0) -> dict[str, Any]:
        """JSON: each measure's estimate, paired deltas, distinct-2 ratio, KL contributors."""
        out: dict[str, Any] = {k: self.estimate(k, seed).to_json() for k in sorted(self.rows)}
        for k in sorted(self.deltas):
            out[f"delta_{k}"] = estimate(self.deltas[k], seed=seed).to_json()
        out["kl_top"] = self.kl_top
        return out


def _kl_parts(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-token terms ``p (log p - log q)`` of ``KL(p || q)``: ``(batch, vocab)`` float64."""
    logp = torch.log_softmax(logits_p.double(), dim=-1)  # (batch, vocab)
    logq = torch.log_softmax(logits_q.double(), dim=-1)  # (batch, vocab)
    return logp.exp() * (logp - logq)


def kl_top_tokens(
    model: Model, logits_p: torch.Tensor, logits_q: torch.Tensor, k: int = 10
) -> list[dict[str, Any]]:
    """Tokens contributing most to the mean next-token ``KL(p || q)`` over prompts.

    ``logits_p``/``logits_q`` are ``(n_prompts, vocab)``. Each token's contribution is its term
    of the KL averaged over prompts, so contributions over the whole vocabulary (``k`` = vocab
    size) sum to the mean KL; ``p`` and ``q`` are the token's mean probabilities.
    """
    parts = _kl_parts(logits_p, logits_q).mean(0)  # (vocab,)
    values, ids = parts.topk(min(k, parts.numel()))
    p = torch.softmax(logits_p.double(), -1).mean(0)  # (vocab,)
    q = torch.softmax(logits_q.double(), -1).mean(0)  # (vocab,)
    return [
        {
            "token": model.tokenizer.decode([i]),
            "id": int(i),
            "contribution": float(v),
            "p": float(p[i]),
            "q": float(q[i]),
        }
        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
    ]


def _completion_rows(texts: list[str], spec: MeasureSpec) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {
        "distinct2": np.array(distinct_n(texts, 2).per_text),
        "repetition": np.array([repetition_rate(t) for t in texts]),
    }
    for t in spec.targets:
        rows[f"target_words:{t.name}"] = np.array(
            [target_word_rate(x, t.words) for x in texts], dtype=float
        )
    if spec.sentiment:
        rows["sentiment"] = np.array(sentiment(texts))
    return rows


def measure(
    model: Model,
    entries: Sequence[PlanEntry],
    conditions: Sequence[Condition],
    spec: MeasureSpec,
    *,
    baseline: Baseline | None = None,
    backend: str | None = None,
) -> tuple[list[ConditionResult], Baseline]:
    """Measure every condition against the unsteered baseline, each measure in one batch.

    The baseline is a condition in ``conditions`` with all coefficients 0 and no injection, or
    ``baseline`` from an earlier call with the same ``spec`` (controls reuse the sweep's), or, if
    neither, an extra unsteered condition run in the same batches. Returns the results in the
    order of ``conditions`` and the baseline.
    """
    _check_conditions(entries, conditions)
    conds, base_idx = _with_baseline(conditions, len(entries), need=baseline is None)
    raw = _run_all(model, entries, conds, spec, backend)
    if base_idx is not None:
        baseline = raw.baseline(base_idx, spec)
    assert baseline is not None
    results = [
        _condition_result(model, c, raw.at(i), baseline, spec) for i, c in enumerate(conditions)
    ]
    return results, baseline


# --------------------------------------------------------------------------- measure's steps


@dataclass
class _Raw:
    """Each measure's raw numbers under every condition (index 0: the first condition)."""

    on_ppl: np.ndarray | None  # (n_conditions, n_on_target)
    off_ppl: np.ndarray | None  # (n_conditions, n_off_target)
    neutral_logits: torch.Tensor | None  # (n_conditions, n_neutral, vocab)
    prompt_logits: torch.Tensor | None  # (n_conditions, n_prompts, vocab)
    texts: list[list[str]]  # per condition: n completions per prompt, prompt-major

    def at(self, i: int) -> _RawRow:
        """Condition ``i``'s numbers."""
        return _RawRow(
            on_ppl=None if self.on_ppl is None else self.on_ppl[i],
            off_ppl=None if self.off_ppl is None else self.off_ppl[i],
            neutral_logits=None if self.neutral_logits is None else self.neutral_logits[i],
            prompt_logits=None if self.prompt_logits is None else self.prompt_logits[i],
            texts=self.texts[i],
        )

    def baseline(self, i: int, spec: MeasureSpec) -> Baseline:
        """Condition ``i`` (the unsteered one) as the :class:`Baseline` of the others."""
        row = self.at(i)
        return Baseline(
            on_ppl=row.on_ppl,
            off_ppl=row.off_ppl,
            neutral_logits=row.neutral_logits,
            prompt_logits=row.prompt_logits,
            rows=_completion_rows(row.texts, spec) if spec.n > 0 else {},
            completions=row.texts,
        )


@dataclass
class _RawRow:
    """One condition's raw numbers (see :class:`_Raw`)."""

    on_ppl: np.ndarray | None  # (n_on_target,)
    off_ppl: np.ndarray | None  # (n_off_target,)
    neutral_logits: torch.Tensor | None  # (n_neutral, vocab)
    prompt_logits: torch.Tensor | None  # (n_prompts, vocab)
    texts: list[str]


def _check_conditions(entries: Sequence[PlanEntry], conditions: Sequence[Condition]) -> None:
    check(len(entries) > 0, "nothing to measure: the plan has no vectors")
    check(len(conditions) > 0, "nothing to measure: give at least one condition")
    for c in conditions:
        check(
            len(c.coeffs) == len(entries),
            f"condition '{c.label}' has {len(c.coeffs)} coefficients for {len(entries)} vectors",
        )


def _with_baseline(
    conditions: Sequence[Condition], n_entries: int, *, need: bool
) -> tuple[list[Condition], int | None]:
    """The conditions to run and the index of the unsteered one; when none is among
    ``conditions`` and one is ``need``-ed (no baseline given), an unsteered one is appended."""
    conds = list(conditions)
    base_idx = next((i for i, c in enumerate(conds) if c.is_baseline), None)
    if base_idx is None and need:
        conds.append(Condition("unsteered", (0.0,) * n_entries))
        base_idx = len(conds) - 1
    return conds, base_idx


def _run_all(
    model: Model,
    entries: Sequence[PlanEntry],
    conds: list[Condition],
    spec: MeasureSpec,
    backend: str | None,
) -> _Raw:
    """Every measure ``spec`` asks for, one batch (all conditions) per measure."""
    kw: dict[str, Any] = {"backend": backend}
    ppl: dict[str, np.ndarray | None] = {}
    for key, sentences in (("on", spec.on_target), ("off", spec.off_target)):
        ppl[key] = (
            sentence_perplexities(
                model,
                entries,
                conds,
                sentences,
                max_tokens=spec.max_tokens,
                batch_size=spec.batch_size,
                **kw,
            )
            if sentences
            else None
        )
    neutral = (
        last_token_logits(model, entries, conds, spec.neutral, batch_size=spec.batch_size, **kw)
        if spec.neutral
        else None
    )
    prompt_logits = (
        last_token_logits(model, entries, conds, spec.prompts, batch_size=spec.batch_size, **kw)
        if spec.targets
        else None
    )
    texts: list[list[str]] = [[] for _ in conds]
    if spec.n > 0:
        texts, _ = completions(
            model,
            entries,
            conds,
            spec.prompts,
            spec.n,
            spec.sampling,
            batch_size=spec.gen_batch_size,
            **kw,
        )
    return _Raw(ppl["on"], ppl["off"], neutral, prompt_logits, texts)


def _condition_result(
    model: Model, cond: Condition, raw: _RawRow, baseline: Baseline, spec: MeasureSpec
) -> ConditionResult:
    """One condition's measures, per sample, compared with the baseline."""
    rows: dict[str, np.ndarray] = {}
    deltas: dict[str, np.ndarray] = {}
    kl_top: list[dict[str, Any]] = []
    if raw.on_ppl is not None and baseline.on_ppl is not None:
        rows["on_target_ratio"] = raw.on_ppl / baseline.on_ppl  # (n_on_target,)
    if raw.off_ppl is not None and baseline.off_ppl is not None:
        rows["off_target_ratio"] = raw.off_ppl / baseline.off_ppl  # (n_off_target,)
    if raw.neutral_logits is not None and baseline.neutral_logits is not None:
        q = baseline.neutral_logits  # (n_neutral, vocab)
        rows["kl"] = next_token_kl(raw.neutral_logits, q).numpy()
        rows["entropy"] = next_token_entropy(raw.neutral_logits).numpy()
        deltas["entropy"] = rows["entropy"] - next_token_entropy(q).numpy()
        kl_top = kl_top_tokens(model, raw.neutral_logits, q, spec.kl_top_k)
    if raw.prompt_logits is not None and baseline.prompt_logits is not None:
        rows.update(_target_shifts(raw.prompt_logits, baseline.prompt_logits, spec.targets))
    if spec.n > 0:
        crow = _completion_rows(raw.texts, spec)
        rows.update(crow)
        deltas.update(_paired_deltas(crow, baseline.rows))
    return ConditionResult(cond, rows, deltas, kl_top, raw.texts)


def _target_shifts(
    logits: torch.Tensor, base: torch.Tensor, targets: Sequence[Targets]
) -> dict[str, np.ndarray]:
    """``target_logprob_shift:NAME`` per prompt for each target set; logits ``(n_prompts, vocab)``."""
    return {
        f"target_logprob_shift:{t.name}": target_logprob_shift(logits, base, list(t.ids)).numpy()
        for t in targets
    }


def _paired_deltas(
    rows: dict[str, np.ndarray], base: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-sample differences from the baseline, for the measures it has with the same shape."""
    return {k: v - base[k] for k, v in rows.items() if k in base and base[k].shape == v.shape}


# --------------------------------------------------------------------------- controls


def specificity_of(result: ConditionResult, seed: int = 0) -> Estimate | None:
    """The condition's specificity (:func:`~workbench.measure.controls.specificity`), or None
    when on- or off-target text was not measured."""
    rows = result.rows
    if "on_target_ratio" not in rows or "off_target_ratio" not in rows:
        return None
    return specificity(rows["on_target_ratio"], rows["off_target_ratio"], seed=seed)


def control_effect_key(effect: EffectSpec) -> str:
    """The measure controls are compared on: the effect itself, except that sampled target
    words are compared through the next-token log-prob shift of the same words (no sampling)."""
    if effect.kind == "target_words":
        return f"target_logprob_shift:{effect.target}"
    return effect.key


def control_spec(spec: MeasureSpec, effect: EffectSpec) -> MeasureSpec:
    """What controls are measured on: on-/off-target text (specificity) and the effect's
    measure, without the neutral-prompt KL and without samples unless the effect is sentiment."""
    sampled = effect.kind == "sentiment"
    return replace(
        spec,
        neutral=[],
        n=spec.n if sampled else 0,
        sentiment=sampled,
        prompts=spec.prompts if (spec.targets or sampled) else [],
    )


def controls_for(
    model: Model,
    vector: SteeringVector,
    layer: int,
    spec: MeasureSpec,
    k: int = DEFAULT_CONTROLS,
    seed: int = 0,
) -> tuple[list[Control], list[str]]:
    """The ``k`` matched controls of ``vector`` at ``layer`` for a run measured with ``spec``
    (words of its texts and targets are not drawn); build them before the run, so a problem
    with them stops the run before any work."""
    texts = [*spec.on_target, *spec.off_target, *spec.prompts]
    avoid = [w for t in spec.targets for w in t.words]
    return matched_controls(model, vector, layer, k, seed=seed, texts=texts, avoid=avoid)


def run_controls(
    model: Model,
    entry: PlanEntry,
    layer: int,
    coeff: float,
    spec: MeasureSpec,
    effect: EffectSpec,
    baseline: Baseline,
    steered: ConditionResult,
    controls: tuple[list[Control], list[str]],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``controls`` (:func:`controls_for`) of ``entry``'s vector at ``coeff``, compared
    with ``steered``.

    All share one batch per measure and the ``baseline`` of the run they control. Returns the
    ``matched`` JSON: each control's effect and specificity, the vector's rank on both, and the
    specificity verdict (:func:`~workbench.measure.controls.against_controls`), or
    ``specificity: None`` with a note when on- or off-target text is missing.
    """
    ctrls, notes = controls[0], list(controls[1])
    out: dict[str, Any] = {"k": len(ctrls), "seed": seed, "notes": notes}
    out["kind"] = ctrls[0].kind if ctrls else None
    results = (
        _measure_controls(model, entry, layer, coeff, ctrls, control_spec(spec, effect), baseline)
        if ctrls
        else []
    )
    key = control_effect_key(effect)
    out["effect"] = _effect_rank(steered, results, key, effect.direction)
    out["items"] = [_control_item(c, r, key) for c, r in zip(ctrls, results, strict=True)]
    out["specificity"] = None
    if specificity_of(steered) is None:
        out["notes"].append(
            "specificity needs on- and off-target text: give --on-target (and --off-target)"
        )
        return out
    cmp = against_controls(
        steered.rows["on_target_ratio"],
        steered.rows["off_target_ratio"],
        [r.rows["on_target_ratio"] for r in results],
        [r.rows["off_target_ratio"] for r in results],
        kind="control-word" if out["kind"] == "word" else "random",
        seed=spec.boot_seed,
    )
    out["specificity"] = cmp.to_json()
    return out


def _measure_controls(
    model: Model,
    entry: PlanEntry,
    layer: int,
    coeff: float,
    ctrls: list[Control],
    spec: MeasureSpec,
    baseline: Baseline,
) -> list[ConditionResult]:
    """Each control alone at ``coeff`` (entry 0, the vector itself, stays off)."""
    kw: dict[str, Any] = {"layers": [layer], "position": entry.position, "units": entry.units}
    entries = [entry.with_coeff(0.0)] + [
        PlanEntry(c.vector, 0.0, label=c.label, **kw) for c in ctrls
    ]
    conds = [
        Condition(c.label, tuple(float(coeff) if j == i + 1 else 0.0 for j in range(len(entries))))
        for i, c in enumerate(ctrls)
    ]
    results, _ = measure(model, entries, conds, spec, baseline=baseline)
    return results


def _effect_rank(
    steered: ConditionResult, results: list[ConditionResult], key: str, direction: int
) -> dict[str, Any]:
    """The vector's effect on ``key`` and how many controls it beats (in the wanted direction)."""
    if key not in steered.rows:
        return {"measure": key, "vector": None, "controls": [], "beats": None}
    vec = steered.delta(key).value
    ctrl = [r.delta(key).value for r in results if key in r.rows]
    return {
        "measure": key,
        "vector": vec,
        "controls": ctrl,
        "beats": sum(direction * (vec - c) > 0 for c in ctrl),
    }


def _control_item(c: Control, r: ConditionResult, key: str) -> dict[str, Any]:
    item = c.to_json()
    if key in r.rows:
        item["effect"] = r.delta(key).to_json()
    for name in ("on_target_ratio", "off_target_ratio"):
        if name in r.rows:
            item[name] = r.estimate(name).to_json()
    spec = specificity_of(r)
    item["specificity"] = None if spec is None else spec.value
    return item


# --------------------------------------------------------------------------- one plan


def result_summary(result: ConditionResult, effect: EffectSpec) -> dict[str, Any]:
    """JSON of one condition: the effect (paired, vs unsteered), damage, specificity, every
    measure."""
    out: dict[str, Any] = {"effect": result.delta(effect.key).to_json()}
    if "off_target_ratio" in result.rows:
        out["damage"] = result.estimate("off_target_ratio").to_json()
    spec = specificity_of(result)
    if spec is not None:
        out["specificity"] = spec.to_json()
    out["measures"] = result.summary()
    out["completions"] = result.completions[:3]
    return out


def measure_vector(
    model: Model,
    vector: SteeringVector,
    coeff: float,
    spec: MeasureSpec,
    effect: EffectSpec,
    *,
    layer: int | None = None,
    units: str = "raw",
    position: str | None = None,
    control_seed: int = 0,
    controls: int = DEFAULT_CONTROLS,
    label: str = "vector",
) -> dict[str, Any]:
    """Effects and side effects of ``coeff x vector`` at ``layer``, with its controls.

    Runs unsteered, steered, a norm-matched random vector at the same coefficient and, for
    prompt-made vectors, the token-injection baseline, all in shared batches; then ``controls``
    matched controls (:func:`run_controls`: control words for prompt pairs, random vectors
    otherwise) against the same baseline. Returns the ``measure`` JSON (``kind: "measure"``)
    with ``matched_controls`` and the ``specificity`` verdict.
    """
    check(
        layer is not None or len(vector.layers) == 1,
        f"the vector has layers {vector.layers}; choose one with --layer",
    )
    at = vector.layers[0] if layer is None else layer
    vec, note = vector_at_layer(model, vector, at)
    kw: dict[str, Any] = {"layers": [at], "position": position, "units": units}
    entry = PlanEntry(vec, coeff, label=label, **kw)
    rand = PlanEntry(random_like(vec, control_seed), 0.0, label="random", **kw)
    conds = [
        Condition("unsteered", (0.0, 0.0)),
        Condition("steered", (float(coeff), 0.0)),
        Condition("random", (0.0, float(coeff))),
    ]
    inject = injection_text(vec)
    if inject is not None:
        conds.append(Condition("injection", (0.0, 0.0), inject=inject))
    ctrls = controls_for(model, vec, at, spec, controls, control_seed)
    results, base = measure(model, [entry, rand], conds, spec)
    matched = run_controls(
        model, entry, at, coeff, spec, effect, base, results[1], ctrls, seed=control_seed
    )
    out: dict[str, Any] = {
        "kind": "measure",
        "model": model.name,
        "vector": {"label": label, **vec.describe()},
        "layer": at,
        "coeff": float(coeff),
        "units": units,
        "position": entry.position,
        "effect_spec": effect.to_json(),
        "spec": spec.to_json(),
        "notes": ([note] if note else []) + matched["notes"],
    }
    for c, r in zip(conds, results, strict=True):
        out[c.label] = result_summary(r, effect)
    if inject is not None:
        out["injection"]["text"] = inject
    out["matched_controls"] = matched
    out["specificity"] = matched["specificity"]
    return out
