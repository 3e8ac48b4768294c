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

from workbench.commands.decompose import check_out
from workbench.errors import check
from workbench.model.hooks import SITE_KINDS
from workbench.model.load import DEFAULT_MODEL, Model
from workbench.parse import parse_params

if TYPE_CHECKING:
    from workbench.decompose.discover import Discovery, ProbeSettings

NAME = "discover"
HELP = "find candidate steering vectors: decompose a layer's activations and rank the components"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help=f"model (default: the store's, or {DEFAULT_MODEL})"
    )
    parser.add_argument("--corpus", default=None, help="builtin:NAME, .txt or .jsonl to capture")
    parser.add_argument("--acts", default=None, help="reuse this activation store instead")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--method", default="pca", help="pca, ica, dictlearn, sae, pretrained-sae")
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
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="probe coefficient in units of the layer's mean residual norm",
    )
    parser.add_argument(
        "--completion-scale",
        type=float,
        default=0.5,
        help="coefficient (norm units) of the sample completion",
    )
    parser.add_argument("--n-prompts", type=int, default=8, help="neutral probe prompts")
    parser.add_argument("--n-damage", type=int, default=8, help="held-out texts for damage")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run_discovery(
    model: Model,
    *,
    layer: int,
    out: str | Path,
    corpus: str | None = None,
    acts: str | Path | None = None,
    method: str = "pca",
    k: int = 16,
    params: dict[str, Any] | None = None,
    dictionary: str | Path | None = None,
    site: str = "resid_pre",
    positions: str = "all",
    max_tokens: int | None = 64,
    settings: ProbeSettings | None = None,
    overwrite: bool = False,
) -> Discovery:
    """The whole ``discover`` pipeline on a loaded model; writes folder ``out`` atomically."""
    import dictionaries
    from workbench.activations.capture import capture
    from workbench.activations.store import ActivationStore
    from workbench.decompose.discover import discover
    from workbench.decompose.fit import fit_from_store, make_dictionary
    from workbench.io import atomic_path

    final = Path(out)
    check_out(final, overwrite, acts)
    check((corpus is None) != (acts is None), "give exactly one of --corpus and --acts")
    if dictionary is not None:
        fitted = dictionaries.load(dictionary)
    else:
        fitted = make_dictionary(method, k, params)
        width = model.n_heads * model.d_head if site == "z" else model.d_model
        fitted._validate_params(width)  # refuse a bad k before the (slow) capture
    model.check_layer(layer)
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        if acts is None:
            capture(
                model,
                str(corpus),
                [layer],
                site=site,
                positions=positions,
                max_tokens=max_tokens,
                out=tmp / "acts",
                progress_bar=False,
            )
            store = ActivationStore.open(tmp / "acts")
        else:
            store = ActivationStore.open(acts)
        if dictionary is None:
            fit_from_store(fitted, store, layer)
        fitted.save(tmp / "dictionary")
        result = discover(model, fitted, store, layer=layer, settings=settings)
        result.extra = {
            "store": str(final / "acts") if acts is None else str(acts),
            "dictionary": str(final / "dictionary"),
            "dropped_nonfinite_rows": int(fitted.fit_stats_.get("dropped_nonfinite_rows", 0)),
        }
        result.save(tmp, record_as=final)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.activations.store import ActivationStore
    from workbench.decompose.discover import ProbeSettings
    from workbench.model.load import load_model

    check(
        (args.corpus is None) != (args.acts is None),
        "give exactly one of --corpus (capture it here) and --acts (reuse a store)",
    )
    name = args.model
    site = args.site or "resid_pre"
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
    settings = ProbeSettings(
        scale=args.scale,
        completion_scale=args.completion_scale,
        n_prompts=args.n_prompts,
        n_damage=args.n_damage,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    result = run_discovery(
        load_model(name or DEFAULT_MODEL),
        layer=args.layer,
        out=args.out,
        corpus=args.corpus,
        acts=args.acts,
        method=args.method,
        k=args.k,
        params=parse_params(args.param),
        dictionary=args.dictionary,
        site=site,
        positions=args.positions,
        max_tokens=args.max_tokens,
        settings=settings,
        overwrite=args.overwrite,
    )
    return {**result.to_json(), "out": str(args.out)}


def render(result: dict[str, Any]) -> str:
    coeff = result["coefficient"]
    lines = [
        f"{len(result['candidates'])} candidates from {result['method']} (k={result['k']}) at "
        f"layer {result['layer']} ({result['site']}) of {result['model']}, probed at "
        f"{coeff['scale']} x mean residual norm ({coeff['mean_norm']:.3g}); saved to "
        f"{result['out']}",
        f"unsteered: {result['unsteered_completion']!r}",
        f"{'rank':>4}  {'score':>8}  {'effect':>7}  {'damage':>7}  label / completion",
    ]
    for rank, c in enumerate(result["candidates"], 1):
        lines.append(
            f"{rank:>4}  {c['score']:>8.3g}  {c['effect']:>7.3f}  {c['damage']:>7.3f}  "
            f"{c['label']}\n{'':>34}{c['completion']!r}"
        )
    return "\n".join(lines)
