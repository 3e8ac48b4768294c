"""``workbench decompose``: fit a dictionary on a stored layer and measure it on held-out data.

Thin over :mod:`workbench.decompose.fit`: a seeded 10% of the store's documents is held out; the
dictionary is fitted on the rest (PCA streams the store), its reconstruction is measured on the
held-out rows, and the model named in the store's manifest gives the next-token loss clean, with
the layer spliced by the reconstruction, and zero-ablated, on the held-out texts. The fitted
dictionary and ``quality.json`` are written to ``--out`` atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dictionaries import progress
from dictionaries.scaling import SCALES
from workbench.decompose.hygiene import DEFAULT_MAX_NORM_RATIO, DEFAULT_SCALE, Hygiene
from workbench.errors import WorkbenchError, check
from workbench.outputs import Output, claim_output
from workbench.parse import parse_params

NAME = "decompose"
HELP = "fit a dictionary (pca, ica, dictlearn, sae, ...) on a stored layer and report its quality"
KIND = "dictionary"  # the kind in --out's workbench marker


def check_out(path: Path, acts: str | Path | None = None) -> None:
    """Refuse an ``--out`` that holds the store ``acts`` (replacing it would delete the store).

    Everything else about ``--out`` is :func:`workbench.outputs.claim_output`'s policy.
    """
    if acts is not None:
        src = Path(acts).resolve()
        check(
            path.resolve() not in (src, *src.parents),
            f"--acts {acts} lies inside --out {path}, which is replaced: choose another --out",
        )


def add_hygiene_arguments(hyg: argparse._ArgumentGroup) -> None:
    """``--max-norm-ratio``, ``--skip-first``, ``--scale`` (shared with ``discover``)."""
    hyg.add_argument(
        "--max-norm-ratio",
        type=float,
        default=DEFAULT_MAX_NORM_RATIO,
        help="drop rows whose norm exceeds this multiple of the median row norm (the massive "
        f"first-token activations); 0 keeps every row (default {DEFAULT_MAX_NORM_RATIO:g})",
    )
    hyg.add_argument(
        "--skip-first", type=int, default=0, help="drop the first N real tokens of each document"
    )
    hyg.add_argument(
        "--scale",
        choices=SCALES,
        default=DEFAULT_SCALE,
        help=f"fit in this space (default {DEFAULT_SCALE}); vectors are mapped back to the "
        "model's space as decoder directions",
    )


def hygiene_from(args: argparse.Namespace) -> Hygiene:
    """The :class:`Hygiene` the options describe (``--max-norm-ratio 0`` keeps every row)."""
    return Hygiene(
        max_norm_ratio=args.max_norm_ratio or None, skip_first=args.skip_first, scale=args.scale
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--acts", required=True, help="activation store (workbench capture)")
    parser.add_argument("--layer", type=int, required=True, help="stored layer to decompose")
    parser.add_argument("--method", default="pca", help="pca, ica, dictlearn, sae, pretrained-sae")
    parser.add_argument("--k", type=int, default=None, help="number of components")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend hyperparameter, repeatable (e.g. --param architecture=topk --param k=8)",
    )
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of documents held out")
    parser.add_argument("--n-texts", type=int, default=32, help="held-out texts for the loss")
    parser.add_argument("--no-loss", action="store_true", help="skip the spliced losses (no model)")
    add_hygiene_arguments(parser.add_argument_group("input hygiene (before the fit)"))
    parser.add_argument("--out", required=True, help="folder for the dictionary and quality.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_out(Path(args.out), args.acts)
    with claim_output(args.out, kind=KIND, overwrite=args.overwrite) as out:
        return _decompose(args, out)


def _decompose(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    import warnings

    from workbench.activations.store import ActivationStore
    from workbench.decompose.fit import (
        evaluate_heldout,
        fit_from_store,
        heldout_docs,
        make_dictionary,
    )
    from workbench.io import write_json
    from workbench.model.load import load_model

    store = ActivationStore.open(args.acts)
    store.check_layer(args.layer)
    dictionary = make_dictionary(args.method, args.k, parse_params(args.param))
    docs = heldout_docs(store, args.holdout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with progress.reporting():  # fits that last over a few seconds say so on stderr
            fit_from_store(
                dictionary, store, args.layer, exclude_docs=docs, hygiene=hygiene_from(args)
            )
        model = None
        if not args.no_loss:
            name = store.manifest.get("model")
            if name is None:
                raise WorkbenchError(f"store {args.acts} does not name its model: use --no-loss")
            model = load_model(str(name))
        quality = evaluate_heldout(
            dictionary, store, args.layer, docs, model=model, n_texts=args.n_texts
        )
    notes = [str(w.message) for w in caught if "NaN or inf" in str(w.message)]
    dropped = {
        "fit": int(dictionary.fit_stats_.get("dropped_nonfinite_rows", 0)),
        "heldout": int(quality.get("dropped_nonfinite_rows", 0)),
    }
    result = {
        "method": dictionary.method,
        "k": dictionary.n_components_,
        "fve": quality["fve"],
        "mse": quality["mse"],
        "l0": quality["l0"],
        "dead": quality["dead_atoms"],
        "loss_clean": quality.get("loss_clean"),
        "loss_spliced": quality.get("loss_spliced"),
        "loss_zero": quality.get("loss_zero"),
        "loss_mean": quality.get("loss_mean"),
        "recovered": quality.get("recovered"),
        "layer": args.layer,
        "site": store.site,
        "model": store.manifest.get("model"),
        "n_fit_rows": int(dictionary.fit_stats_.get("n_rows", 0)),
        "heldout_docs": quality["heldout_docs"],
        "heldout_rows": quality["heldout_rows"],
        "dropped_nonfinite_rows": dropped,
        "input_hygiene": dictionary.fit_stats_.get("input"),
        "notes": notes + ([quality["note"]] if "note" in quality else []),
        "out": str(args.out),
    }
    with out.staged() as tmp:
        dictionary.save(tmp)
        write_json(tmp / "quality.json", {**quality, **result})
    return result


def _num(x: Any, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(x, fmt)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['method']} with k={result['k']} on layer {result['layer']} ({result['site']}) "
        f"of {result['model']}: saved to {result['out']}",
        f"  held out: {result['heldout_docs']} documents, {result['heldout_rows']} rows; "
        f"fitted on {result['n_fit_rows']} rows",
        f"  fve {_num(result['fve'])}  mse {_num(result['mse'], '.4g')}  "
        f"l0 {_num(result['l0'], '.1f')}  dead {result['dead']}",
        f"  next-token loss: clean {_num(result['loss_clean'])}  spliced "
        f"{_num(result['loss_spliced'])}  zero-ablated {_num(result['loss_zero'])}"
        + (f"  (recovered {result['recovered']:.1%})" if result["recovered"] is not None else ""),
    ]
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)
