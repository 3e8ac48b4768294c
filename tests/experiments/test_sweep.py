"""Sweeps: files written, overshoot wired to the rows, diagnostics, interruption and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import workbench.experiments.sweep as sweep_mod
from workbench.errors import WorkbenchError
from workbench.experiments.diagnostics import attention_to_steered, norm_ratios
from workbench.experiments.overshoot import OvershootThresholds, find_overshoot
from workbench.experiments.sweep import SweepConfig, parse_coeffs, parse_layers, run_sweep
from workbench.measure.effects import MeasureSpec, actadd_sampling, default_effect, target_set
from workbench.measure.stats import Estimate
from workbench.model.hooks import Site, recording
from workbench.model.load import Model
from workbench.report.write import write_run
from workbench.steer.apply import apply_plan
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.vectors.build import from_prompts, mean_residual_norms
from workbench.vectors.vector import SteeringVector

PROMPTS = ["I went up to my friend and said", "The weather today is"]
SENTENCES = ["The bus runs every fifteen minutes.", "I need to buy milk and bread."]


@pytest.fixture(scope="module")
def wedding(tiny_model: Model) -> SteeringVector:
    return from_prompts(tiny_model, " wedding", " ", [1])


def _spec(tiny_model: Model) -> MeasureSpec:
    return MeasureSpec(
        prompts=PROMPTS,
        targets=[target_set(tiny_model, ["wedding", "bride"])],
        off_target=SENTENCES,
        on_target=["The bride and groom exchanged vows."],
        neutral=PROMPTS,
        n=1,
        sampling=actadd_sampling(4),
    )


def _sweep(model: Model, vec: SteeringVector, out: Path, **kw: Any) -> dict[str, Any]:
    spec = _spec(model)
    cfg = SweepConfig(coeffs=[0, 2, 32], layers=[1, 2], attention_prompts=2)
    return run_sweep(model, vec, cfg, spec, default_effect(spec), out=out, **kw)


def _strip(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def test_sweep_writes_everything(
    tiny_model: Model, wedding: SteeringVector, tmp_path: Path
) -> None:
    data = _sweep(tiny_model, wedding, tmp_path / "s")
    out = tmp_path / "s"
    write_run(out, data)
    saved = json.loads((out / "sweep.json").read_text())
    assert saved == _strip(data)
    assert [(r["layer"], r["coeff"]) for r in data["rows"]] == [
        (layer, c) for layer in (1, 2) for c in (0.0, 2.0, 32.0)
    ]
    with (out / "rows.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {"effect", "effect_low", "damage_high", "coeff_norm_units"} <= set(
        rows[0]
    )
    for name in ("effect_damage.png", "heatmap.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (out / "plots" / "sweep.html").read_text()
    assert (out / "report.html").stat().st_size > 10_000
    # Coefficient 0 is the unsteered model; norm units are coeff x |v| / residual norm.
    for layer in (1, 2):
        zero = next(r for r in data["rows"] if r["layer"] == layer and r["coeff"] == 0)
        assert zero["damage"] == 1.0 and zero["effect_delta"] == 0.0 and zero["kl"] == 0.0
        two = next(r for r in data["rows"] if r["layer"] == layer and r["coeff"] == 2)
        resid = mean_residual_norms(tiny_model, [layer])[layer]
        vnorm = from_prompts(tiny_model, " wedding", " ", [layer]).norm(layer)
        assert two["coeff_norm_units"] == pytest.approx(2 * vnorm / resid, rel=1e-5)
    assert (
        len(data["samples"]) == 6 and data["samples"][0]["completions"][0]["prompt"] == PROMPTS[0]
    )


def test_overshoot_matches_the_rows(
    tiny_model: Model, wedding: SteeringVector, tmp_path: Path
) -> None:
    data = _sweep(tiny_model, wedding, tmp_path / "s")
    for ov in data["overshoot"]:
        rows = [r for r in data["rows"] if r["layer"] == ov["layer"]]

        def est(r: dict[str, Any], key: str) -> Estimate:
            lo, hi = r[f"{key}_ci"]
            return Estimate(r[key], lo, hi, 2)

        again = find_overshoot(
            [r["coeff"] for r in rows],
            [est(r, "effect_delta") for r in rows],
            ppl_ratios=[est(r, "damage") for r in rows],
            distinct_ratios=[r["distinct2_ratio"] for r in rows]
            if "distinct2_ratio" in rows[0]
            else None,
        )
        assert (again.onset, again.best, again.breakdown) == (
            ov["onset"],
            ov["best"],
            ov["breakdown"],
        )
        diag = ov["diagnostics"]
        assert len(diag["norm_ratio"]) == len(rows) == len(diag["attn_to_steered"])
        assert all(0.0 <= a <= 1.0 for a in diag["attn_to_steered"])
        assert isinstance(diag["why"], str)
    ctl = data["controls"]["by_layer"][0]
    assert {"random", "injection", "vector", "coeff"} <= set(ctl)
    assert ctl["injection"]["text"] == " wedding"


def test_interrupted_sweep_keeps_rows_and_resumes_identically(
    tiny_model: Model, wedding: SteeringVector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = _sweep(tiny_model, wedding, tmp_path / "full")
    real = sweep_mod.sweep_layer

    def stop_at_layer_2(*args: Any, **kw: Any) -> dict[str, Any]:
        if args[2] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(sweep_mod, "sweep_layer", stop_at_layer_2)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _sweep(tiny_model, wedding, out)
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert [json.loads(x)["layer"] for x in lines] == [1]
    assert not (out / "sweep.json").exists()
    with pytest.raises(WorkbenchError, match="--resume"):
        _sweep(tiny_model, wedding, out)
    monkeypatch.setattr(sweep_mod, "sweep_layer", real)
    with (out / "rows.jsonl").open("a") as f:
        f.write('{"layer": 2, "rows": [tor')  # a torn line from a crash mid-write is ignored
    resumed = _sweep(tiny_model, wedding, out, resume=True)
    assert _strip(resumed) == _strip(full)
    spec = _spec(tiny_model)
    other = SweepConfig(coeffs=[0, 4], layers=[1, 2])
    with pytest.raises(WorkbenchError, match="other settings"):
        run_sweep(tiny_model, wedding, other, spec, default_effect(spec), out=out, resume=True)


def test_diagnostics_known_answers(tiny_model: Model, wedding: SteeringVector) -> None:
    entry = PlanEntry(wedding, [0.0, 3.0], layers=[1])
    assert norm_ratios(entry, 1, 2.0) == pytest.approx([0.0, 3.0 * wedding.norm(1) / 2.0])
    # Front window: rows 1.. of the vector (row 0, BOS, is zero) sit on positions 1..n-1, so
    # those are the positions the plan changes, and the keys the diagnostic sums over below.
    n = wedding.directions[1].shape[0]
    ids, mask, _ = tiny_model.encode(PROMPTS[:1])  # (1, pos)
    assert ids.shape[1] >= n + 3
    site = Site(wedding.site, 1)
    with torch.inference_mode(), recording(tiny_model, [site]) as clean:
        tiny_model.tl(ids, attention_mask=mask)
    with (
        torch.inference_mode(),
        apply_plan(tiny_model, SteeringPlan([entry.with_coeff(3.0)]), backend="tl"),
        recording(tiny_model, [site]) as steered,  # registered after the plan: sees its change
    ):
        tiny_model.tl(ids, attention_mask=mask)
    changed = (steered[site] - clean[site])[0].norm(dim=-1) > 0  # (pos,)
    assert changed.nonzero().flatten().tolist() == list(range(1, n))
    # At coefficient 0 the mass equals that of a plain TransformerLens run.
    got = attention_to_steered(tiny_model, entry, 1, PROMPTS)
    ids, mask, _ = tiny_model.encode(PROMPTS)
    _, cache = tiny_model.tl.run_with_cache(ids, attention_mask=mask)
    vals = []
    for p in range(len(PROMPTS)):
        length = int(mask[p].sum())
        if length <= n:  # no query position after the steered window
            continue
        per_layer = [
            cache[f"blocks.{b}.attn.hook_pattern"][p, :, n:length, 1:n].sum(-1).mean()
            for b in range(1, tiny_model.n_layers)
        ]
        vals.append(float(torch.stack(per_layer).mean()))
    assert len(vals) > 0
    assert got[0] == pytest.approx(sum(vals) / len(vals), rel=1e-4)
    assert got[1] is not None and got[1] != pytest.approx(got[0], rel=1e-6)
    everywhere = PlanEntry(wedding, [0.0, 1.0], layers=[1], position="all")
    assert attention_to_steered(tiny_model, everywhere, 1, PROMPTS) == [None, None]


def test_bad_sweep_inputs() -> None:
    assert parse_coeffs("4, 1,2") == [0.0, 1.0, 2.0, 4.0]
    with pytest.raises(WorkbenchError, match="'x' is not a number"):
        parse_coeffs("0,x")
    with pytest.raises(WorkbenchError, match="no coefficients"):
        parse_coeffs(" , ")
    with pytest.raises(WorkbenchError, match="not a finite"):
        parse_coeffs("0,inf")
    with pytest.raises(WorkbenchError, match="not an integer"):
        parse_layers("2,a")
    with pytest.raises(WorkbenchError, match="besides 0"):
        SweepConfig(coeffs=[0])
    with pytest.raises(WorkbenchError, match="max_ppl_ratio"):
        SweepConfig(coeffs=[0, 1], thresholds=OvershootThresholds(max_ppl_ratio=0.5))


@pytest.mark.real_model
def test_sweep_reaches_breakdown(default_model: Model) -> None:
    """Off-target perplexity ratio passes 2 somewhere on the sweep, and not at coefficient 0."""
    from workbench.corpora import load_corpus

    vec = from_prompts(default_model, " wedding", " ", [6])
    spec = MeasureSpec(
        on_target=load_corpus("builtin:wedding", limit=4),
        off_target=load_corpus("builtin:unrelated", limit=4),
    )
    cfg = SweepConfig(
        coeffs=[0, 2, 8, 32, 128],
        thresholds=OvershootThresholds(max_ppl_ratio=2.0),
        attention_prompts=0,
    )
    data = run_sweep(default_model, vec, cfg, spec, default_effect(spec))
    ov = data["overshoot"][0]
    damage = {r["coeff"]: r["damage"] for r in data["rows"]}
    assert damage[0.0] == 1.0
    assert ov["breakdown"] is not None and ov["breakdown"] > 0
    assert damage[ov["breakdown"]] > 2.0
