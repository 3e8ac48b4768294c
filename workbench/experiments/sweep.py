"""Coefficient and layer sweeps, with the overshoot finder, diagnostics and controls.

For each layer (the vector rebuilt there from its recipe, as ActAdd's layer sweep does) every
coefficient is measured in one batch (:func:`workbench.measure.effects.measure`): the effect, the
damage (off-target perplexity ratio), KL, entropy and degeneration, each with a bootstrap
interval. :func:`workbench.experiments.overshoot.find_overshoot` then marks ``onset``, ``best`` and
``breakdown``, with diagnostics for why it breaks (:mod:`workbench.experiments.diagnostics`), and the
controls are measured at the layer's reference coefficient (``best``, else the largest
coefficient before breakdown): a norm-matched random vector and, for prompt-made vectors, the
token-injection baseline.

Written to ``out`` (see :mod:`workbench.experiments.sweep_files`): ``config.json`` (what was asked),
``rows.jsonl`` (one line per finished layer, appended as layers finish, so an interrupted sweep
keeps them and ``resume=True`` skips them), then ``sweep.json`` (the source of truth),
``rows.csv``, ``plots/`` (PNG and interactive HTML) and ``report.html``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, check
from workbench.experiments.diagnostics import attention_to_steered, explain, norm_ratios
from workbench.experiments.overshoot import Overshoot, OvershootThresholds, find_overshoot
from workbench.experiments.sweep_files import append_record, prepare, read_done
from workbench.measure.controls import DEFAULT_CONTROLS, check_controls
from workbench.measure.effects import (
    Condition,
    ConditionResult,
    EffectSpec,
    MeasureSpec,
    controls_for,
    injection_text,
    measure,
    result_summary,
    run_controls,
    specificity_of,
    vector_at_layer,
)
from workbench.measure.stats import Estimate
from workbench.model.load import Model
from workbench.outputs import Output, claim_output
from workbench.steer.plan import STEER_POSITIONS, PlanEntry
from workbench.vectors.build import mean_residual_norms, random_like
from workbench.vectors.vector import UNITS, SteeringVector

FORMAT = "workbench.sweep/1"
Log = Callable[[str], None]


def parse_coeffs(text: str | Sequence[float | str]) -> list[float]:
    """``"0,1,2,4"`` or a list -> sorted unique floats, with 0 (the unsteered baseline) added."""
    items = [x for x in text.split(",") if x.strip()] if isinstance(text, str) else list(text)
    check(len(items) > 0, "no coefficients given; e.g. --coeffs 0,1,2,4,8")
    out = []
    for x in items:
        try:
            c = float(x)
        except (TypeError, ValueError, OverflowError):
            raise WorkbenchError(f"coefficient {str(x).strip()!r} is not a number") from None
        check(math.isfinite(c), f"coefficient {x} is not a finite number")
        out.append(c)
    return sorted(set(out) | {0.0})


def parse_layers(text: str | Sequence[int | str]) -> list[int]:
    """``"2,6,10"`` or a list -> unique ints in the order given."""
    items = [x for x in text.split(",") if x.strip()] if isinstance(text, str) else list(text)
    check(len(items) > 0, "no layers given; e.g. --layers 2,6,10")
    out: list[int] = []
    for x in items:
        try:
            layer = int(str(x).strip())
        except ValueError:
            raise WorkbenchError(f"layer {str(x).strip()!r} is not an integer") from None
        if layer not in out:
            out.append(layer)
    return out


@dataclass
class SweepConfig:
    """How to sweep (what to measure is a :class:`~workbench.measure.effects.MeasureSpec`).

    ``layers`` None: the vector's own layer (it must have one). ``units``: coefficients in
    ``raw`` multiples of the stored vector or in ``norm`` (residual-norm) units.
    ``attention_prompts``: prompts used for the attention diagnostic; ``samples_shown``: prompts
    whose first completion is kept per coefficient. ``controls``: matched controls run at each
    layer's reference coefficient (control words for prompt pairs, random vectors otherwise);
    ``control_seed`` draws them and the plain random control.
    """

    coeffs: list[float]
    layers: list[int] | None = None
    units: str = "raw"
    position: str | None = None
    thresholds: OvershootThresholds = field(default_factory=OvershootThresholds)
    attention_prompts: int = 4
    samples_shown: int = 3
    control_seed: int = 0
    controls: int = DEFAULT_CONTROLS

    def __post_init__(self) -> None:
        self.coeffs = parse_coeffs(self.coeffs)
        check(len(self.coeffs) >= 2, "a sweep needs at least one coefficient besides 0")
        check(self.units in UNITS, f"unknown units '{self.units}': use raw or norm")
        check(
            self.position is None or self.position in STEER_POSITIONS,
            f"unknown position '{self.position}': use one of {', '.join(STEER_POSITIONS)}",
        )
        check(self.attention_prompts >= 0, "attention_prompts must be >= 0")
        check(self.samples_shown >= 0, "samples_shown must be >= 0")
        check_controls(self.controls)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["thresholds"] = self.thresholds.to_json()
        return out


# --------------------------------------------------------------------------- one layer


def _ci(e: Estimate) -> list[float]:
    return [e.low, e.high]


def _row(
    layer: int,
    coeff: float,
    units: str,
    raw: float,
    norm_units: float,
    result: ConditionResult,
    effect: EffectSpec,
    base_distinct: float | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "layer": layer,
        "coeff": coeff,
        "units": units,
        "raw_coeff": raw,
        "coeff_norm_units": norm_units,
    }
    eff, delta = result.estimate(effect.key), result.delta(effect.key)
    row.update(effect=eff.value, effect_ci=_ci(eff), effect_delta=delta.value)
    row["effect_delta_ci"] = _ci(delta)
    if "off_target_ratio" in result.rows:
        dmg = result.estimate("off_target_ratio")
        row.update(damage=dmg.value, damage_ci=_ci(dmg))
    spec = specificity_of(result)
    if spec is not None:
        row.update(specificity=spec.value, specificity_ci=_ci(spec), control_specificity=None)
    for key in sorted(result.rows):
        est = result.estimate(key)
        row[key], row[f"{key}_ci"] = est.value, _ci(est)
    if base_distinct and "distinct2" in result.rows:
        row["distinct2_ratio"] = result.estimate("distinct2").value / base_distinct
    return row


def _reference(coeffs: list[float], ov: Overshoot) -> tuple[float, str]:
    """The coefficient controls are measured at, and why."""
    if ov.best is not None:
        return ov.best, "best"
    side = [c for c in coeffs if c * ov.side > 0]
    before = [c for c in side if ov.breakdown is None or abs(c) < abs(ov.breakdown)]
    if before:
        return max(before, key=abs), "largest coefficient before breakdown (no best)"
    return min(side, key=abs), "smallest coefficient (breaks at once)"


def _diagnostics(
    model: Model,
    entry: PlanEntry,
    vec: SteeringVector,
    layer: int,
    spec: MeasureSpec,
    attention_prompts: int,
) -> dict[str, Any]:
    """Residual norm, norm ratios and attention to the steered position at ``layer``."""
    resid = mean_residual_norms(model, [layer], vec.site)[layer]
    ratios = norm_ratios(entry, layer, resid)
    attn_prompts = (spec.prompts or spec.neutral)[:attention_prompts]
    attn = attention_to_steered(model, entry, layer, attn_prompts) if attn_prompts else []
    return {
        "residual_norm": resid,
        "vector_norm": vec.norm(layer),
        "norm_ratio": ratios,
        "attn_to_steered": attn,
        "attn_layers": [layer, model.n_layers - 1],
    }


def _base_distinct(base: ConditionResult, notes: list[str]) -> float | None:
    """Distinct-2 of the unsteered completions (None when not measured or zero, with a note)."""
    if "distinct2" not in base.rows:
        return None
    value = base.estimate("distinct2").value or None
    if value is None:
        notes.append("unsteered completions have no distinct bigrams; distinct-2 ratio skipped")
    return value


def _overshoot(
    layer: int,
    coeffs: list[float],
    results: list[ConditionResult],
    rows: list[dict[str, Any]],
    base_distinct: float | None,
    diagnostics: dict[str, Any],
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
) -> tuple[Overshoot, dict[str, Any]]:
    """The overshoot finder over the layer's coefficients, and its record with diagnostics."""
    ov = find_overshoot(
        coeffs,
        [res.delta(effect.key) for res in results],
        ppl_ratios=[res.estimate("off_target_ratio") for res in results]
        if spec.off_target
        else None,
        distinct_ratios=[r["distinct2_ratio"] for r in rows] if base_distinct else None,
        thresholds=config.thresholds,
        direction=effect.direction,
    )
    overshoot = {"layer": layer, **ov.to_json(), "diagnostics": diagnostics}
    overshoot["diagnostics"]["why"] = explain(coeffs, diagnostics, ov.breakdown)
    return ov, overshoot


def _samples(
    layer: int,
    coeffs: list[float],
    results: list[ConditionResult],
    spec: MeasureSpec,
    shown: int,
) -> list[dict[str, Any]]:
    """The first completion of the first ``shown`` prompts, per coefficient."""
    prompts = spec.prompts[:shown]
    return [
        {
            "layer": layer,
            "coeff": c,
            "completions": [
                {"prompt": p, "text": res.completions[i * spec.n]} for i, p in enumerate(prompts)
            ]
            if spec.n > 0
            else [],
        }
        for c, res in zip(coeffs, results, strict=True)
    ]


def sweep_layer(
    model: Model,
    vector: SteeringVector,
    layer: int,
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
    *,
    label: str = "vector",
) -> dict[str, Any]:
    """Measure every coefficient at ``layer``; find overshoot; run the controls.

    Returns the layer's record: ``rows``, ``overshoot`` (with diagnostics), ``controls``,
    ``samples`` and ``notes``.
    """
    vec, note = vector_at_layer(model, vector, layer)
    notes = [note] if note else []
    coeffs = config.coeffs
    matched_controls = controls_for(model, vec, layer, spec, config.controls, config.control_seed)
    entry = PlanEntry(
        vec, coeffs, layers=[layer], position=config.position, units=config.units, label=label
    )
    conds = [Condition(f"{c:g}", (c,)) for c in coeffs]
    results, base = measure(model, [entry], conds, spec)
    diagnostics = _diagnostics(model, entry, vec, layer, spec, config.attention_prompts)
    ratios, attn = diagnostics["norm_ratio"], diagnostics["attn_to_steered"]
    raw = entry.raw_coeffs(layer)
    base_distinct = _base_distinct(results[coeffs.index(0.0)], notes)
    rows = [
        _row(layer, c, config.units, r, math.copysign(q, r), res, effect, base_distinct)
        for c, r, q, res in zip(coeffs, raw, ratios, results, strict=True)
    ]
    ov, overshoot = _overshoot(
        layer, coeffs, results, rows, base_distinct, diagnostics, config, spec, effect
    )
    for row, a in zip(rows, attn or [None] * len(rows), strict=True):
        row["norm_ratio"], row["attn_to_steered"] = abs(row["coeff_norm_units"]), a

    ref, why = _reference(coeffs, ov)
    at_ref = results[coeffs.index(ref)]
    controls = _controls(model, entry, vec, layer, ref, spec, effect, base, config.control_seed)
    matched = run_controls(
        model,
        entry,
        layer,
        ref,
        spec,
        effect,
        base,
        at_ref,
        matched_controls,
        seed=config.control_seed,
    )
    notes += matched["notes"]
    controls.update(
        coeff=ref, reference=why, vector=result_summary(at_ref, effect), matched=matched
    )
    if matched["specificity"] is not None:
        ref_row = rows[coeffs.index(ref)]
        ref_row["control_specificity"] = matched["specificity"]["control_specificity"]
        ref_row["specificity_p"] = matched["specificity"]["p_value"]
        ref_row["specificity_status"] = matched["specificity"]["status"]
    return {
        "layer": layer,
        "rows": rows,
        "overshoot": overshoot,
        "controls": controls,
        "samples": _samples(layer, coeffs, results, spec, config.samples_shown),
        "notes": notes,
    }


def _controls(
    model: Model,
    entry: PlanEntry,
    vec: SteeringVector,
    layer: int,
    coeff: float,
    spec: MeasureSpec,
    effect: EffectSpec,
    base: Any,
    seed: int,
) -> dict[str, Any]:
    """Random vector (same norms) at ``coeff`` and, for prompt pairs, the injection baseline."""
    rand = PlanEntry(
        random_like(vec, seed),
        0.0,
        layers=[layer],
        position=entry.position,
        units=entry.units,
        label="random",
    )
    conds = [Condition("random", (0.0, coeff))]
    inject = injection_text(vec)
    if inject is not None:
        conds.append(Condition("injection", (0.0, 0.0), inject=inject))
    res, _ = measure(model, [entry.with_coeff(0.0), rand], conds, spec, baseline=base)
    return {
        "layer": layer,
        "random": {"seed": seed, **result_summary(res[0], effect)},
        "injection": None if inject is None else {"text": inject, **result_summary(res[1], effect)},
    }


# --------------------------------------------------------------------------- the sweep


def _signature(
    model: Model,
    vector: SteeringVector,
    layers: list[int],
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
) -> dict[str, Any]:
    texts = [spec.prompts, spec.on_target, spec.off_target, spec.neutral]
    digest = hashlib.sha256(json.dumps(texts).encode())
    for layer in sorted(vector.directions):
        digest.update(vector.directions[layer].numpy().tobytes())
    return {
        "format": FORMAT,
        "model": model.name,
        "vector": {**vector.describe(), "recipe": vector.recipe},
        "layers": layers,
        "config": config.to_json(),
        "spec": spec.to_json(),
        "effect": effect.to_json(),
        "digest": digest.hexdigest()[:24],
    }


def run_sweep(
    model: Model,
    vector: SteeringVector,
    config: SweepConfig,
    spec: MeasureSpec,
    effect: EffectSpec,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    label: str = "vector",
    log: Log | None = None,
    ray: str | None = None,
) -> dict[str, Any]:
    """Sweep ``config.coeffs`` at each layer and return the sweep JSON.

    ``ray``: run each layer as a Ray task (an address as in
    :func:`workbench.activations.ray_session.connect`; ``"local"`` for a local instance).

    ``out`` keeps the resumable state (``config.json``, ``rows.jsonl``, one line per finished
    layer); write the outputs with :func:`workbench.report.write_run`.

    Example:
        >>> cfg = SweepConfig(coeffs=[0, 1, 2, 4, 8], layers=[6, 12])         # doctest: +SKIP
        >>> data = run_sweep(model, vec, cfg, spec, effect, out="runs/sweep")  # doctest: +SKIP
        >>> write_run("runs/sweep", data)                                       # doctest: +SKIP
        >>> [o["breakdown"] for o in data["overshoot"]]                         # doctest: +SKIP
    """
    vector.check_compatible(model.name, model.d_model)
    layers = config.layers or list(vector.layers)
    check(
        config.layers is not None or len(layers) == 1,
        f"the vector has layers {layers}; choose with --layers",
    )
    for layer in layers:
        model.check_layer(layer)
    say = log or (lambda _msg: None)
    signature = _signature(model, vector, layers, config, spec, effect)
    folder = None if out is None else Path(out)
    done: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        if folder is not None:
            claim = stack.enter_context(claim_sweep(folder, overwrite=overwrite, resume=resume))
            prepare(folder, signature, resume, overwrite)
            claim.mark()
            done = read_done(folder / "rows.jsonl") if resume else {}
        for layer in layers:
            if layer in done:
                say(f"layer {layer}: already done (resumed)")
        todo = [layer for layer in layers if layer not in done]
        remote = None
        if ray is not None:
            from workbench.experiments.ray_sweep import sweep_layers_ray  # imports Ray

            remote = sweep_layers_ray(
                model, vector, todo, config, spec, effect, label=label, address=ray
            )
        for layer in todo:
            t0 = time.perf_counter()
            if remote is not None:
                rec = next(remote)
            else:
                rec = sweep_layer(model, vector, layer, config, spec, effect, label=label)
            done[layer] = rec
            if folder is not None:
                append_record(folder / "rows.jsonl", rec)
            ov = rec["overshoot"]
            say(
                f"layer {layer}: {len(config.coeffs)} coefficients in "
                f"{time.perf_counter() - t0:.1f}s (onset {ov['onset']}, best {ov['best']}, "
                f"breakdown {ov['breakdown']})"
            )
    return assemble(signature, [done[layer] for layer in layers], label)


def claim_sweep(folder: str | os.PathLike[str], *, overwrite: bool, resume: bool) -> Output:
    """The sweep folder claimed under the output policy (:func:`workbench.outputs.claim_output`;
    a folder of an older sweep, without the marker, counts as a sweep's)."""
    return claim_output(
        folder,
        kind="sweep",
        overwrite=overwrite,
        resume=resume,
        legacy=lambda p: (p / "config.json").is_file() and (p / "rows.jsonl").exists(),
        resumable=True,
    )


def assemble(
    signature: dict[str, Any], records: list[dict[str, Any]], label: str
) -> dict[str, Any]:
    """The sweep JSON from the per-layer records."""
    return {
        "kind": "sweep",
        "model": signature["model"],
        "vector": {"label": label, **signature["vector"]},
        "effect": signature["effect"],
        "config": signature["config"],
        "spec": signature["spec"],
        "rows": [row for rec in records for row in rec["rows"]],
        "overshoot": [rec["overshoot"] for rec in records],
        "controls": {
            "note": "random: a norm-matched random vector at the layer's reference coefficient; "
            "injection: the steering prompt put in front of the text instead of the vector; "
            "matched: control-word vectors (prompt pairs) or random vectors built the same way, "
            "at the reference coefficient, with the specificity verdict (rows carry each "
            "coefficient's specificity; control_specificity on the reference row)",
            "by_layer": [rec["controls"] for rec in records],
        },
        "samples": [s for rec in records for s in rec["samples"]],
        "notes": [n for rec in records for n in rec["notes"]],
    }
