"""``workbench discover``: corpus -> activations -> dictionary -> ranked candidate vectors.

Captures ``--corpus`` at ``--layer`` (or reuses a store given by ``--acts``), fits ``--method``
with ``--k`` components (or reuses ``--dictionary``), then probes, labels and ranks both signs of
every component with :func:`workbench.decompose.discover.discover`. ``--out`` receives ``acts/`` (when
captured here), ``dictionary/``, ``candidates/*.safetensors`` and ``discover.json``, written
atomically: an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import dictionaries
from dictionaries import progress
from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.commands.decompose import add_hygiene_arguments, check_out, hygiene_from
from workbench.corpora import load_corpus
from workbench.decompose.concepts import Concepts, concept_report, load_concepts
from workbench.decompose.discover import RANKINGS, discover
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.hygiene import Hygiene
from workbench.decompose.learned import MEASURES
from workbench.decompose.trials import TrialSettings
from workbench.decompose.unsupervised import DEFAULT_MEASURE, DEFAULT_RADIUS
from workbench.decompose.unsupervised import METHODS as LEARNED_METHODS
from workbench.errors import check
from workbench.model.hooks import SITE_KINDS
from workbench.model.load import DEFAULT_MODEL, Model
from workbench.outputs import claim_output
from workbench.parse import parse_params

if TYPE_CHECKING:
    from workbench.decompose.discover import Discovery

NAME = "discover"
HELP = "find candidate steering vectors: decompose a layer's activations and rank the components"
KIND = "discover"  # the kind in --out's workbench marker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help=f"model (default: the store's, or {DEFAULT_MODEL})"
    )
    parser.add_argument("--corpus", default=None, help="builtin:NAME, .txt or .jsonl to capture")
    parser.add_argument("--acts", default=None, help="reuse this activation store instead")
    parser.add_argument(
        "--layer",
        type=int,
        required=True,
        help="layer L; with resid_pre the input of block L (transformers' hidden_states[L])",
    )
    parser.add_argument(
        "--method",
        default="ica",
        help="ica (default: found the planted property most often, see the README), pca, "
        "dictlearn, sae, pretrained-sae; or melbo / jacobian: learn directions at --layer "
        "(the source) that most move --target-layer, no corpus",
    )
    parser.add_argument("--k", type=int, default=16, help="number of components (default 16)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend hyperparameter, repeatable",
    )
    parser.add_argument("--dictionary", default=None, help="reuse a fitted dictionary folder")
    parser.add_argument(
        "--site",
        default=None,
        choices=SITE_KINDS,
        help="site to capture (default resid_pre; a store keeps its own)",
    )
    parser.add_argument("--positions", default="all", choices=("all", "last", "mean"))
    parser.add_argument("--max-tokens", type=int, default=64, help="cut captured documents")
    _add_learned_arguments(parser.add_argument_group("melbo and jacobian (unsupervised vectors)"))
    add_hygiene_arguments(parser.add_argument_group("input hygiene (before the fit)"))
    _add_trial_arguments(parser.add_argument_group("calibration and ranking"))
    parser.add_argument(
        "--contrast",
        default=None,
        help="a second corpus: find what separates --corpus from it (both captured into one "
        "store; candidates ranked by how well they separate the two, x effect)",
    )
    parser.add_argument(
        "--concepts",
        default=None,
        help="JSONL with text and label: report each candidate's AUROC and cosine against them",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_learned_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--target-layer",
        type=int,
        default=None,
        help="layer whose resid_pre the vectors should move (default: halfway from --layer to "
        "the last layer)",
    )
    group.add_argument(
        "--radius",
        type=float,
        default=DEFAULT_RADIUS,
        help="R: the vectors' norm while training, in units of --layer's mean residual norm "
        f"(default {DEFAULT_RADIUS:g}, from the measured sweep in the README)",
    )
    group.add_argument(
        "--measure",
        choices=MEASURES,
        default=DEFAULT_MEASURE,
        help="how the target layer's displacement is measured: raw (MELBO's norm of the change) "
        "or direction (the change of each position's direction, which one exploding position "
        f"cannot dominate); default {DEFAULT_MEASURE}",
    )
    group.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="Adam steps (melbo, default 100) or power iterations (jacobian, default 20)",
    )
    group.add_argument(
        "--prompts",
        default=None,
        help="prompts to train on: builtin:NAME, .txt or .jsonl, the first 64 used (default: 12 "
        "built-in instructions)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the initial vectors")


def _add_trial_arguments(trial: argparse._ArgumentGroup) -> None:
    d = TrialSettings()
    trial.add_argument(
        "--damage-budget",
        type=float,
        default=d.damage_budget,
        help="held-out perplexity ratio each candidate's suggested coefficient may reach "
        f"(default {d.damage_budget:g})",
    )
    trial.add_argument(
        "--rank-by",
        choices=RANKINGS,
        default=None,
        help="combined (default: between-document share x effect over random controls; with "
        "--contrast: contrast = separation of the two corpora x effect), or one signal alone",
    )
    trial.add_argument("--n-random", type=int, default=d.n_random, help="random control directions")
    trial.add_argument(
        "--n-prompts", type=int, default=d.n_prompts, help="neutral prompts for the effect"
    )
    trial.add_argument(
        "--n-damage", type=int, default=d.n_damage, help="held-out texts for the damage"
    )
    trial.add_argument(
        "--max-new-tokens", type=int, default=d.max_new_tokens, help="sampled completion length"
    )
    trial.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per forward pass")


def run_discovery(
    model: Model,
    *,
    layer: int,
    out: str | Path,
    corpus: str | None = None,
    acts: str | Path | None = None,
    method: str = "ica",
    k: int = 16,
    params: dict[str, Any] | None = None,
    dictionary: str | Path | None = None,
    site: str = "resid_pre",
    positions: str = "all",
    max_tokens: int | None = 64,
    hygiene: Hygiene | None = None,
    settings: TrialSettings | None = None,
    rank_by: str | None = None,
    concepts: str | Concepts | None = None,
    contrast: str | None = None,
    overwrite: bool = False,
) -> Discovery:
    """The whole ``discover`` pipeline on a loaded model; writes folder ``out`` atomically.

    ``out`` is claimed (checked and locked) first, so nothing runs for an ``out`` that would be
    refused or that another run is writing.
    """
    final = Path(out)
    check_out(final, acts)
    with claim_output(out, kind=KIND, overwrite=overwrite) as claim:
        check((corpus is None) != (acts is None), "give exactly one of --corpus and --acts")
        labelled = load_concepts(concepts) if isinstance(concepts, str) else concepts
        fitted = _dictionary(model, dictionary, method, k, params, site)
        model.check_layer(layer)
        _check_contrast(rank_by, contrast, corpus)
        docs, target_docs = _documents(corpus, contrast, k, dictionary is None)
        with claim.staged() as tmp:
            if acts is None:
                capture(
                    model,
                    docs,
                    [layer],
                    site=site,
                    positions=positions,
                    max_tokens=max_tokens,
                    out=tmp / "acts",
                    progress_bar=False,
                )
            store = ActivationStore.open(tmp / "acts" if acts is None else acts)
            _check_docs(len(store.docs()), k, dictionary is None)
            if dictionary is None:
                with progress.reporting():  # fits that last over a few seconds say so on stderr
                    fit_from_store(fitted, store, layer, hygiene=hygiene)
            fitted.save(tmp / "dictionary")
            result = discover(
                model,
                fitted,
                store,
                layer=layer,
                settings=settings,
                rank_by=rank_by,
                target_docs=target_docs,
            )
            result.extra = {
                "store": str(final / "acts") if acts is None else str(acts),
                "dictionary": str(final / "dictionary"),
                "dropped_nonfinite_rows": int(fitted.fit_stats_.get("dropped_nonfinite_rows", 0)),
            }
            if contrast is not None:
                result.extra["contrast"] = {"target": corpus, "contrast": contrast}
            if labelled is not None:
                result.extra["concepts"] = concept_report(model, fitted, result, labelled)
            result.save(tmp, record_as=final)
    return result


def _dictionary(
    model: Model,
    folder: str | Path | None,
    method: str,
    k: int,
    params: dict[str, Any] | None,
    site: str,
) -> dictionaries.Dictionary:
    """The saved dictionary at ``folder``, or a new one whose ``k`` is checked against the site's
    width before the (slow) capture."""
    if folder is not None:
        return dictionaries.load(folder)
    fresh = make_dictionary(method, k, params)
    fresh._validate_params(model.n_heads * model.d_head if site == "z" else model.d_model)
    return fresh


def _documents(
    corpus: str | None, contrast: str | None, k: int, fitting: bool
) -> tuple[list[str], np.ndarray | None]:
    """The documents to capture (the corpus, then the contrast corpus) and which are targets."""
    if corpus is None:
        return [], None
    docs = load_corpus(corpus)
    target_docs = None
    if contrast is not None:
        other = load_corpus(contrast)
        target_docs = np.array([True] * len(docs) + [False] * len(other))
        docs = docs + other
    _check_docs(len(docs), k, fitting)
    return docs, target_docs


def _check_contrast(rank_by: str | None, contrast: str | None, corpus: str | None) -> None:
    check(contrast is None or corpus is not None, "--contrast needs --corpus (not --acts)")
    check(
        rank_by != "contrast" or contrast is not None,
        "--rank-by contrast needs a contrast corpus: give --contrast CORPUS",
    )


def _check_docs(n_docs: int, k: int, fitting: bool) -> None:
    check(n_docs >= 2, f"the corpus has {n_docs} document: discovery needs at least 2")
    check(
        not fitting or n_docs >= k,
        f"the corpus has {n_docs} documents but --k asks for {k} components: give at least {k} "
        "documents or lower --k",
    )


def run_learned_discovery(
    model: Model,
    *,
    method: str,
    source: int,
    out: str | Path,
    settings: TrialSettings | None = None,
    rank_by: str | None = None,
    overwrite: bool = False,
    **learn_args: Any,
) -> Discovery:
    """``discover --method melbo|jacobian``: :func:`~workbench.decompose.unsupervised.learn`
    ``k`` directions, then calibrate, rank and label them as :func:`run_discovery` does; ``out``
    gets ``candidates/`` and ``discover.json``, atomically."""
    from workbench.decompose.learned import check_learning
    from workbench.decompose.unsupervised import default_target, discover_learned, learn

    check(method in LEARNED_METHODS, f"unknown learned method {method!r}: use melbo or jacobian")
    target = learn_args.pop("target", None)
    target = default_target(model, source) if target is None else target
    # Bad settings or an empty or unknown prompt set fail before the claim.
    check_learning(
        model,
        source=source,
        target=target,
        k=learn_args.get("k", 8),
        radius=learn_args.get("radius", DEFAULT_RADIUS),
        iterations=1 if learn_args.get("iterations") is None else learn_args["iterations"],
        measure=learn_args.get("measure", DEFAULT_MEASURE),
        prompts=learn_args.get("prompts"),
    )
    with claim_output(out, kind=KIND, overwrite=overwrite) as claim:
        with progress.reporting():  # training that lasts over a few seconds says so on stderr
            learned = learn(model, method, source=source, target=target, **learn_args)
        with claim.staged() as tmp:
            result = discover_learned(model, learned, settings=settings, rank_by=rank_by)
            result.save(tmp, record_as=Path(out))
    return result


def _run_learned(args: argparse.Namespace, settings: TrialSettings) -> dict[str, Any]:
    from workbench.model.load import load_model

    check(
        args.corpus is None and args.acts is None and args.dictionary is None,
        f"--method {args.method} learns its vectors from --prompts: drop --corpus, --acts and "
        "--dictionary",
    )
    check(args.radius > 0, f"radius R must be positive (got {args.radius:g})")
    check(args.k >= 1, f"--k must be at least 1 (got {args.k})")
    check(
        args.target_layer is None or args.layer < args.target_layer,
        f"source layer {args.layer} must come before target layer {args.target_layer}",
    )
    from workbench.decompose.learned import resolve_prompts

    resolve_prompts(args.prompts)
    check_out(Path(args.out), None)
    result = run_learned_discovery(
        load_model(args.model or DEFAULT_MODEL),
        method=args.method,
        source=args.layer,
        target=args.target_layer,
        out=args.out,
        k=args.k,
        radius=args.radius,
        iterations=args.iterations,
        prompts=args.prompts,
        seed=args.seed,
        measure=args.measure,
        settings=settings,
        rank_by=args.rank_by,
        overwrite=args.overwrite,
    )
    return {**result.to_json(), "out": str(args.out)}


def run(args: argparse.Namespace) -> dict[str, Any]:

    if args.method in LEARNED_METHODS:
        return _run_learned(args, _settings(args))
    check(
        (args.corpus is None) != (args.acts is None),
        "give exactly one of --corpus (capture it here) and --acts (reuse a store)",
    )
    name = args.model
    site = args.site or "resid_pre"
    hygiene = hygiene_from(args)
    settings = _settings(args)
    concepts = load_concepts(args.concepts) if args.concepts is not None else None
    _check_contrast(args.rank_by, args.contrast, args.corpus)
    # Claimed before the store is read and the model loaded; run_discovery shares the lock.
    check_out(Path(args.out), args.acts)
    with claim_output(args.out, kind=KIND, overwrite=args.overwrite):
        return _run(args, name, site, hygiene, settings, concepts)


def _run(
    args: argparse.Namespace,
    name: str | None,
    site: str,
    hygiene: Hygiene,
    settings: TrialSettings,
    concepts: Concepts | None,
) -> dict[str, Any]:
    from workbench.activations.store import ActivationStore
    from workbench.model.load import load_model

    if args.acts is not None:
        store = ActivationStore.open(args.acts)
        store.check_layer(args.layer)
        stored = str(store.manifest.get("model"))
        check(
            name is None or name == stored,
            f"--acts {args.acts} holds activations of {stored} but --model is {name}: drop "
            f"--model or use a store captured from {name}",
        )
        check(
            args.site is None or args.site == store.site,
            f"--acts {args.acts} holds site {store.site}, not --site {args.site}: drop --site",
        )
        name, site = stored, store.site
    params = parse_params(args.param)
    if args.dictionary is None:
        # Types and ranges of --k and --param are checked before the model loads.
        fresh = make_dictionary(args.method, args.k, params)
        if args.acts is not None:
            fresh._validate_params(store.d_model)
    result = run_discovery(
        load_model(name or DEFAULT_MODEL),
        layer=args.layer,
        out=args.out,
        corpus=args.corpus,
        acts=args.acts,
        method=args.method,
        k=args.k,
        params=params,
        dictionary=args.dictionary,
        site=site,
        positions=args.positions,
        max_tokens=args.max_tokens,
        hygiene=hygiene,
        settings=settings,
        rank_by=args.rank_by,
        concepts=concepts,
        contrast=args.contrast,
        overwrite=args.overwrite,
    )
    return {**result.to_json(), "out": str(args.out)}


def _settings(args: argparse.Namespace) -> TrialSettings:
    return TrialSettings(
        damage_budget=args.damage_budget,
        n_prompts=args.n_prompts,
        n_damage=args.n_damage,
        max_new_tokens=args.max_new_tokens,
        n_random=args.n_random,
        batch_size=args.batch_size,
    )


def render(result: dict[str, Any]) -> str:
    coeff = result["coefficient"]
    ctrl = result["controls"]
    lines = [
        f"{len(result['candidates'])} candidates from {result['method']} (k={result['k']}) on "
        f"{result['model']}; saved to {result['out']}",
        f"site: {result['layer_convention']}",
        f"coefficients in units of the layer's mean residual norm ({coeff['mean_norm']:.3g}), "
        f"calibrated to a held-out perplexity ratio of {result['settings']['damage_budget']:g}; "
        f"random controls' median effect {_g(ctrl.get('median_effect'))} nats",
        f"ranked by {result['rank_by']}; unsteered: {result['unsteered_completions'][0]!r}",
        *_learned_lines(result.get("learned")),
        f"{'rank':>4}  {'coeff':>6}  {'ppl':>5}  {'effect':>6}  {'xrand':>5}  {'betw':>5}  label",
    ]
    for rank, c in enumerate(result["candidates"], 1):
        lines.append(
            f"{rank:>4}  {_g(c['suggested_coeff']):>6}  {_g(c['ppl_ratio']):>5}  "
            f"{c['effect']:>6.3f}  {_g(c['effect_vs_random']):>5}  "
            f"{_g(c['between_doc_share']):>5}  {c['label']}"
        )
        for flag in c.get("flags") or (["inert"] if c["inert"] else []):
            lines.append(f"{'':>6}! {flag}")
        if c.get("contrast_auroc") is not None:
            lines.append(f"{'':>6}separates the target corpus at AUROC {c['contrast_auroc']:.3f}")
        if c["completions"]:
            lines.append(f"{'':>6}{c['completions'][0]!r}")
    for row in result.get("concepts", {}).get("best", []):
        lines.append(
            f"concept {row['label']!r}: best candidate {row['candidate']} (rank {row['rank']}), "
            f"AUROC {row['auroc']:.3f}, cosine with the labelled mean difference "
            f"{row['cosine']:+.3f}"
        )
    return "\n".join(lines)


def _learned_lines(learned: dict[str, Any] | None) -> list[str]:
    """How learned vectors were found, and how far they move the target layer."""
    if not learned:
        return []
    moved = learned["displacement_vs_random"]
    lo, hi = moved["ratio_ci"]
    return [
        f"{learned['method']} at resid_pre {learned['source_layer']} -> resid_pre "
        f"{learned['target_layer']}, R = {learned['radius']:g} x the source layer's mean "
        f"residual norm, displacement measured as {learned.get('measure', 'raw')}, "
        f"{learned['n_prompts']} prompts, {learned['seconds']:.0f} s",
        f"they move layer {learned['target_layer']} {moved['ratio']:.3g}x as much as "
        f"{moved['n_random']} random directions of the same norm (95% interval over prompts "
        f"{lo:.3g}-{hi:.3g}x; per vector "
        + ", ".join(f"{x:.3g}" for x in moved["per_vector"])
        + ")",
    ]


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
