"""The end-to-end demo (``workbench demo``, what ``make demo`` runs), stage by stage.

corpus -> capture -> PCA and SAE -> discovered candidates -> a prompt-pair vector (ActAdd's
" wedding" - " ") with its random control -> a coefficient sweep with overshoot marked and the
controls -> two vectors composed at two layers ("Love" - "Hate" and the wedding vector) ->
``demo.json`` and a self-contained ``report.html``. Each stage prints its timing; the defaults
keep the whole run within a few minutes on two CPU cores with the embedded model, and
``quick=True`` runs the same pipeline on tiny settings (for tests).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.experiments.compose import ComposeItem, run_compose
from workbench.experiments.sweep import SweepConfig, run_sweep
from workbench.io import write_json
from workbench.measure.effects import MeasureSpec, actadd_sampling, default_effect, target_set
from workbench.measure.text_metrics import WEDDING_WORDS
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.outputs import claim_output
from workbench.report.write import write_run
from workbench.vectors.build import from_prompts, random_like
from workbench.vectors.vector import SteeringVector

LOVE_WORDS = ("love", "loving", "loved", "happy", "kind", "wonderful", "friend")
Log = Callable[[str], None]


@dataclass
class DemoSettings:
    """Sizes of every stage; :meth:`quick` shrinks them for tests."""

    n_general: int = 80
    n_contrast: int = 20
    capture_max_tokens: int = 48
    pca_k: int = 4
    sae_latents: int = 64
    sae_steps: int = 200
    probe_prompts: int = 3
    probe_texts: int = 2
    coeffs: list[float] = field(default_factory=lambda: [0, 2, 8, 16, 32])
    n_prompts: int = 4
    n_samples: int = 1
    max_new_tokens: int = 10
    n_sentences: int = 5
    n_neutral: int = 5
    n_compose_texts: int = 4
    compose_coeffs: tuple[float, float] = (4.0, 4.0)

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            n_general=12,
            n_contrast=4,
            capture_max_tokens=24,
            pca_k=3,
            sae_latents=16,
            sae_steps=20,
            probe_prompts=2,
            probe_texts=2,
            coeffs=[0, 2, 64],
            n_prompts=2,
            n_samples=1,
            max_new_tokens=4,
            n_sentences=3,
            n_neutral=3,
            n_compose_texts=2,
        )


class _Stages:
    """Prints each stage with its timing and keeps ``[{stage, seconds, summary}]``."""

    def __init__(self, log: Log, total: int) -> None:
        self.log, self.total = log, total
        self.rows: list[dict[str, Any]] = []
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        n = len(self.rows) + 1
        self.log(f"[{n}/{self.total}] {name} ...")
        row: dict[str, Any] = {"stage": name, "summary": ""}
        t0, c0 = time.perf_counter(), time.process_time()
        yield row
        row["seconds"] = round(time.perf_counter() - t0, 2)
        # CPU seconds (all threads): what the stage costs whatever else the machine is doing.
        row["cpu_seconds"] = round(time.process_time() - c0, 2)
        self.rows.append(row)
        elapsed = time.perf_counter() - self.start
        self.log(
            f"      {row['summary']} ({row['seconds']:.1f}s, cpu {row['cpu_seconds']:.0f}s; "
            f"{elapsed:.0f}s so far)"
        )


def _layers(model: Model) -> tuple[int, int]:
    """The steering (and dictionary) layer, a fifth of the depth as ActAdd's 6 of 48, and an
    earlier one for the second vector of the composition (on the default model the wedding
    vector raises wedding words at layers 3 and 6, not past the middle)."""
    steer = max(1, model.n_layers // 5)
    return steer, steer // 2 if steer >= 2 else steer + 1


def _fit_dictionaries(store: ActivationStore, layer: int, model: Model, s: DemoSettings) -> Any:
    import dictionaries
    from dictionaries import DictionaryInfo

    info = DictionaryInfo(model=model.name, site=store.site, layer=layer)
    X = store.load(layer).numpy()  # (rows, d_model)
    # Streaming PCA (covariance + a d_model x d_model eigendecomposition) scales to any store.
    batches = (b.numpy() for b in store.iter_batches(layer, 4096))
    pca = dictionaries.PCA(n_components=s.pca_k).fit_stream(batches, info=info)
    sae = dictionaries.create(
        "sae", n_components=s.sae_latents, n_steps=s.sae_steps, batch_size=256, lr=3e-3
    ).fit(X, info=info)
    quality = {
        "pca": dictionaries.reconstruction_quality(pca, X),
        "sae": dictionaries.reconstruction_quality(sae, X),
    }
    for q in quality.values():
        q.pop("dead_atom_indices", None)
    return pca, sae, quality


def _discover(
    model: Model, pca: Any, store: ActivationStore, layer: int, s: DemoSettings, out: Path
) -> tuple[list[dict[str, Any]], str]:
    """Rank both signs of every PCA component and save them; the top five, or a skip note."""
    try:
        from workbench.decompose.discover import discover
        from workbench.decompose.trials import TrialSettings
    except ImportError:
        return [], "discovery skipped: workbench.decompose.discover is not available in this build"
    trials = TrialSettings(
        n_prompts=s.probe_prompts,
        n_damage=s.probe_texts,
        n_completion_prompts=s.probe_prompts,
        max_new_tokens=s.max_new_tokens // 2 or 1,
    )
    found = discover(model, pca, store, layer=layer, settings=trials)
    found.save(out)
    keys = ("label", "score", "effect", "effect_vs_random", "ppl_ratio", "suggested_coeff")
    return [_candidate_row(c, keys) for c in found.candidates[:5]], ""


def _candidate_row(c: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """One candidate as the demo shows it: its numbers, first completion and vector file."""
    completion = c.completions[0] if c.completions else ""
    return {
        "name": c.name,
        **{k: getattr(c, k) for k in keys},
        "completion": completion,
        "vector_path": c.vector_path,
    }


def _candidates_summary(cands: list[dict[str, Any]], s: DemoSettings) -> str:
    return (
        f"{2 * s.pca_k} signed PCA components ranked; best {cands[0]['label']!r} "
        f"(score {cands[0]['score']:.3g})"
    )


def run_demo(
    model_name: str = DEFAULT_MODEL,
    out: str | os.PathLike[str] = "runs/demo",
    *,
    quick: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Run the whole pipeline; write ``out/demo.json`` and ``out/report.html``; return the JSON.

    Example:
        >>> data = run_demo(out="runs/demo", quick=True)  # doctest: +SKIP
        >>> data["findings"][0]  # doctest: +SKIP
    """
    # Reruns replace the demo's own folder (it holds the marker), never a user's folder.
    with claim_output(out, kind="demo", overwrite=True, legacy=_is_demo_folder) as claim:
        claim.mark()
        return _run_demo(model_name, Path(out), quick=quick, log=log)


def _is_demo_folder(path: Path) -> bool:
    """A demo folder from before folders were marked."""
    return (path / "demo.json").is_file()


def _run_demo(model_name: str, folder: Path, *, quick: bool, log: Log) -> dict[str, Any]:
    s = DemoSettings.quick() if quick else DemoSettings()
    st = _Stages(log, total=8)
    notes: list[str] = []
    data: dict[str, Any] = {"kind": "demo", "settings": asdict(s), "quick": quick}

    with st.stage("load model") as row:
        model = load_model(model_name)
        steer_layer, layer2 = _layers(model)
        dict_layer = steer_layer  # discovered candidates live where the sweep steers
        data["model"] = model.name
        row["summary"] = f"{model.name}: {model.n_layers} layers, d_model {model.d_model}"
    with st.stage("capture a built-in corpus") as row:
        store, row["summary"] = _capture_corpus(model, dict_layer, s, folder / "acts")
    with st.stage("fit PCA and an SAE") as row:
        pca, data["dictionaries"], row["summary"] = _dictionaries(
            store, dict_layer, model, s, folder
        )
    with st.stage("discover and rank candidates") as row:
        cands, note = _discover(model, pca, store, dict_layer, s, folder / "discover")
        data["candidates"] = cands
        notes += [note] if note else []
        row["summary"] = note or _candidates_summary(cands, s)
    with st.stage("build a prompt-pair vector and its random control") as row:
        wedding, love, row["summary"] = _vectors(model, steer_layer, layer2, folder / "vectors")
    with st.stage("sweep the wedding vector") as row:
        neutral = load_corpus("builtin:neutral_prompts")
        spec = _sweep_spec(model, neutral, s)
        sweep = _sweep(model, wedding, steer_layer, spec, s, folder / "sweep", log)
        data["sweep"] = sweep
        ov = sweep["overshoot"][0]
        row["summary"] = f"onset {ov['onset']}, best {ov['best']}, breakdown {ov['breakdown']}"
    with st.stage("compose two vectors at two layers") as row:
        comp = _compose(model, love, wedding, (steer_layer, layer2), spec, neutral, s)
        data["compose"] = comp
        row["summary"] = "retention " + ", ".join(
            f"{v['label']} {r:.2f}" for v, r in zip(comp["vectors"], comp["retention"], strict=True)
        )
    with st.stage("write the report") as row:
        data["findings"] = findings(data)
        data["notes"] = notes + sweep.get("notes", []) + comp.get("notes", [])
        data["stages"] = st.rows + [{"stage": "write the report", "seconds": 0.0}]
        data["files"] = write_run(folder, data)
        row["summary"] = f"report at {data['files']['report']}"
    data["stages"] = st.rows
    data["total_seconds"] = round(time.perf_counter() - st.start, 1)
    data["total_cpu_seconds"] = round(time.process_time() - st.cpu_start, 1)
    write_json(folder / "demo.json", data)
    return data


# --------------------------------------------------------------------------- the stages


def _capture_corpus(
    model: Model, layer: int, s: DemoSettings, out: Path
) -> tuple[ActivationStore, str]:
    """General text plus loving and hateful text at ``layer``; the store and a summary line."""
    texts = load_corpus("builtin:general", limit=s.n_general)
    texts += load_corpus("builtin:loving", limit=s.n_contrast)
    texts += load_corpus("builtin:hateful", limit=s.n_contrast)
    res = capture(
        model,
        texts,
        [layer],
        site="resid_pre",
        positions="all",
        max_tokens=s.capture_max_tokens,
        out=out,
        overwrite=True,
        progress_bar=False,
    )
    summary = f"{res.docs} docs, {res.rows} rows at layer {layer} ({res.tokens_per_s:.0f} tok/s)"
    return ActivationStore.open(out), summary


def _dictionaries(
    store: ActivationStore, layer: int, model: Model, s: DemoSettings, folder: Path
) -> tuple[Any, dict[str, Any], str]:
    """Fit and save PCA and the SAE; the PCA (discovery's input), their quality, a summary."""
    pca, sae, quality = _fit_dictionaries(store, layer, model, s)
    pca.save(folder / "pca")
    sae.save(folder / "sae")
    summary = (
        f"PCA k={s.pca_k} explains {quality['pca']['fve']:.2f} of the variance; SAE "
        f"{s.sae_latents} latents explains {quality['sae']['fve']:.2f} at L0 "
        f"{quality['sae']['l0']:.1f}"
    )
    return pca, quality, summary


def _vectors(
    model: Model, steer_layer: int, layer2: int, folder: Path
) -> tuple[SteeringVector, SteeringVector, str]:
    """The wedding vector (at both layers), its random control and "Love" - "Hate", saved."""
    # Both layers in one pass: the compose stage needs the vector at the second layer too.
    wedding = from_prompts(model, " wedding", " ", [steer_layer, layer2])
    love = from_prompts(model, "Love", "Hate", [steer_layer])
    folder.mkdir(exist_ok=True)
    wedding.save(folder / "wedding.safetensors")
    random_like(wedding.at_layers([steer_layer]), 0).save(folder / "wedding_random.safetensors")
    love.save(folder / "love_hate.safetensors")
    summary = (
        f"' wedding' - ' ' at layer {steer_layer}: norm {wedding.norm(steer_layer):.1f} vs "
        f"residual norm {wedding.layer_norms[steer_layer]:.1f}"
    )
    return wedding, love, summary


def _sweep_spec(model: Model, neutral: list[str], s: DemoSettings) -> MeasureSpec:
    """What the sweep measures: wedding words, wedding vs unrelated sentences, neutral KL."""
    return MeasureSpec(
        prompts=neutral[: s.n_prompts],
        targets=[target_set(model, WEDDING_WORDS, "wedding")],
        on_target=load_corpus("builtin:wedding", limit=s.n_sentences),
        off_target=load_corpus("builtin:unrelated", limit=s.n_sentences),
        neutral=neutral[: s.n_neutral],
        n=s.n_samples,
        sampling=actadd_sampling(s.max_new_tokens),
        max_tokens=32,
    )


def _sweep(
    model: Model,
    wedding: SteeringVector,
    layer: int,
    spec: MeasureSpec,
    s: DemoSettings,
    out: Path,
    log: Log,
) -> dict[str, Any]:
    """Sweep the wedding vector's coefficient at ``layer`` with controls; write its report."""
    sweep = run_sweep(
        model,
        wedding,
        SweepConfig(s.coeffs, [layer], attention_prompts=2),
        spec,
        default_effect(spec, "on_target"),
        out=out,
        overwrite=True,
        label="' wedding' - ' '",
        log=lambda m: log("      " + m),
    )
    write_run(out, sweep)
    return sweep


def _compose(
    model: Model,
    love: SteeringVector,
    wedding: SteeringVector,
    layers: tuple[int, int],
    spec: MeasureSpec,
    neutral: list[str],
    s: DemoSettings,
) -> dict[str, Any]:
    """Compose "Love" - "Hate" at the first layer with the wedding vector at the second (ActAdd)."""
    c_love, c_wed = s.compose_coeffs
    items = [
        ComposeItem(
            love, c_love, layers[0], "'Love' - 'Hate'", target_set(model, LOVE_WORDS, "love")
        ),
        ComposeItem(
            wedding,
            c_wed,
            layers[1],
            "' wedding' - ' '",
            target_set(model, WEDDING_WORDS, "wedding"),
        ),
    ]
    cspec = MeasureSpec(
        prompts=["I hate you because", "I went up to my friend and said"] + neutral[1:3],
        targets=[it.targets for it in items if it.targets is not None],
        off_target=spec.off_target[: s.n_compose_texts],
        neutral=spec.neutral[: s.n_compose_texts],
    )
    return run_compose(model, items, cspec)


def findings(data: dict[str, Any]) -> list[str]:
    """A few sentences summarising the demo's numbers."""
    out = []
    sw = data["sweep"]
    ov = sw["overshoot"][0]
    rows = {r["coeff"]: r for r in sw["rows"] if r["layer"] == ov["layer"]}
    ctl = sw["controls"]["by_layer"][0]
    ref = rows[ctl["coeff"]]
    out.append(
        f"The wedding vector at layer {ov['layer']}: onset {ov['onset']}, best {ov['best']}, "
        f"breakdown {ov['breakdown']} ({ov['diagnostics']['why']})."
    )
    out.append(
        f"At coefficient {ctl['coeff']:g} ({ref['coeff_norm_units']:.2f}x the residual norm) the "
        f"perplexity ratio is {ref.get('on_target_ratio', float('nan')):.3f} on wedding "
        f"sentences and {ref.get('off_target_ratio', float('nan')):.3f} on unrelated ones."
    )
    rnd, inj = ctl["random"]["measures"], (ctl.get("injection") or {}).get("measures", {})
    parts = [f"random vector {rnd['on_target_ratio']['value']:.3f}"]
    if inj:
        parts.append(f"' wedding' put in front {inj['on_target_ratio']['value']:.3f}")
    out.append("Controls, wedding-sentence perplexity ratio: " + ", ".join(parts) + ".")
    matched = ctl.get("matched") or {}
    if matched.get("specificity"):
        words = ", ".join(str(i.get("prompt", i["label"])).strip() for i in matched["items"])
        out.append(
            f"Specificity against {matched['k']} control words ({words}), each built the "
            f"same way: {matched['specificity']['verdict']}."
        )
    comp = data.get("compose")
    if comp and comp.get("verdicts"):
        out += [f"Composition: {v}." for v in comp["verdicts"]]
    if comp:
        parts = [
            f"{v['label']} {r:.2f}" + ("" if sig else " (its effect alone is not distinct from 0)")
            for v, r, sig in zip(
                comp["vectors"], comp["retention"], comp["alone_significant"], strict=True
            )
        ]
        damage = comp["damage"]["combined"].get("off_target_ratio", {}).get("value", float("nan"))
        out.append(
            f"Composition: retention {', '.join(parts)}; damage of both together: off-target "
            f"perplexity ratio {damage:.3f}."
        )
    cands = data.get("candidates") or []
    if cands:
        out.append(
            f"Top discovered candidate: {cands[0]['label']} (score {cands[0]['score']:.3g})."
        )
    return out
