"""``workbench vector ...``: build steering vectors and inspect saved ones.

Sub-verbs (each thin over :mod:`workbench.vectors`): ``from-prompts``, ``from-datasets``,
``probe``, ``iti``, ``from-component``, ``from-sae``, ``random``, ``info``, and ``export`` /
``import`` of llama.cpp control vectors (:mod:`workbench.vectors.llamacpp`). Builders save with
``SteeringVector.save`` and print the same summary ``info`` prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.activations.batches import ROW_POSITIONS
from workbench.corpora import load_text_set
from workbench.errors import check
from workbench.model.hooks import Site
from workbench.model.load import DEFAULT_MODEL, Model, load_model
from workbench.outputs import claim_output
from workbench.vectors.vector import SteeringVector

NAME = "vector"
HELP = "build steering vectors (prompts, datasets, probe, ITI heads, dictionaries, random) and inspect them"
KIND = "vector"  # what --out holds, for the output policy

Handler = Callable[[argparse.Namespace], dict[str, Any]]
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


def _sub(
    sub: Any, name: str, help_text: str, handler: Handler, *, out: bool = True
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    # SUPPRESS: `--json` may also come before the sub-verb; a default here would overwrite it.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    if out:
        p.add_argument("--out", required=True, help="output .safetensors file")
        p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(_vector_handler=handler)
    return p


def _texts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pos-file", required=True, help="positive texts: .txt, .jsonl, builtin:NAME")
    p.add_argument("--neg-file", required=True, help="negative texts: .txt, .jsonl, builtin:NAME")
    p.add_argument("--limit", type=int, default=None, help="use at most N texts of each file")
    p.add_argument("--max-tokens", type=int, default=128, help="cut texts to N tokens")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vector_command", metavar="SUBVERB", required=True)

    p = _sub(sub, "from-prompts", "ActAdd vector from prompt pairs (per position)", _from_prompts)
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"name or folder (default {DEFAULT_MODEL})"
    )
    p.add_argument("--layer", type=int, action="append", required=True, help="repeatable")
    p.add_argument("--pos", action="append", required=True, help="positive prompt (repeatable)")
    p.add_argument("--neg", action="append", required=True, help="negative prompt, one per --pos")
    p.add_argument("--site", default="resid_pre", choices=SITES)

    p = _sub(sub, "from-datasets", "mean difference of two text sets", _from_datasets)
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"name or folder (default {DEFAULT_MODEL})"
    )
    p.add_argument("--layer", type=int, action="append", required=True, help="repeatable")
    _texts(p)
    p.add_argument("--positions", default="last", choices=ROW_POSITIONS)
    p.add_argument("--site", default="resid_pre", choices=SITES)

    p = _sub(sub, "probe", "logistic-regression probe direction with held-out accuracy", _probe)
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"name or folder (default {DEFAULT_MODEL})"
    )
    p.add_argument("--layer", type=int, required=True)
    _texts(p)
    p.add_argument("--positions", default="last", choices=ROW_POSITIONS)
    p.add_argument("--site", default="resid_pre", choices=SITES)
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")

    p = _sub(sub, "iti", "ITI: mass-mean shifts on the top-K heads by probe accuracy", _iti)
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"name or folder (default {DEFAULT_MODEL})"
    )
    _texts(p)
    p.add_argument("--k", type=int, default=16, help="number of heads")
    p.add_argument("--positions", default="last", choices=("last", "mean"))
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--C", type=float, default=1.0)

    p = _sub(sub, "from-component", "a dictionary component (either sign)", _from_component)
    p.add_argument("--dictionary", required=True, help="folder written by a dictionary's save")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--sign", type=int, default=1, choices=(1, -1))
    p.add_argument("--layer", type=int, default=None, help="default: the dictionary's layer")
    p.add_argument("--model", default=None, help="default: the dictionary's model")
    p.add_argument("--site", default=None, help="default: the dictionary's site")

    p = _sub(sub, "from-sae", "an SAE feature's decoder row", _from_sae)
    p.add_argument("--sae", required=True, help="SAELens folder or workbench SAE folder")
    p.add_argument("--feature", type=int, required=True)
    p.add_argument("--sign", type=int, default=1, choices=(1, -1))
    p.add_argument("--layer", type=int, default=None, help="default: from the SAE's hook name")
    p.add_argument("--model", default=None, help="default: the SAE's model")
    p.add_argument("--site", default=None, help="default: from the SAE's hook name")

    p = _sub(sub, "random", "norm-matched random control for a vector", _random)
    p.add_argument("--like", required=True, help="vector file to match")
    p.add_argument("--seed", type=int, default=0)

    p = _sub(sub, "info", "describe a saved vector", _info, out=False)
    p.add_argument("file", help="vector .safetensors file")

    p = _sub(
        sub,
        "export",
        "write a vector as a llama.cpp control vector (--control-vector FILE)",
        _export,
        out=False,
    )
    p.add_argument("file", help="vector .safetensors file")
    p.add_argument("output", help="the .gguf file to write")
    p.add_argument("--format", default="gguf", choices=("gguf",), help="llama.cpp's format")
    p.add_argument(
        "--coeff",
        default=None,
        help="fold this coefficient into the file (default: none; llama.cpp's scale is it)",
    )
    p.add_argument("--units", default="raw", choices=("raw", "norm"), help="of --coeff")
    p.add_argument(
        "--row",
        default=None,
        help="for a per-position (prompt-pair) vector: mean, last or a row index",
    )
    p.add_argument("--model-hint", default=None, help="llama.cpp architecture name to record")
    p.add_argument("--overwrite", action="store_true", help="replace a file exported before")

    p = _sub(sub, "import", "read a llama.cpp control vector (.gguf) as a vector", _import)
    p.add_argument("file", help="control vector .gguf (from llama.cpp, repeng or an export)")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"name or folder (default {DEFAULT_MODEL})"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    handler: Handler = args._vector_handler
    if getattr(args, "output", None) is not None:  # `export` writes its positional file
        with claim_output(args.output, kind=KIND, overwrite=args.overwrite, file=True):
            return handler(args)
    if getattr(args, "out", None) is None:  # `info` writes nothing
        return handler(args)
    # Checked and locked before the model loads; the handler writes the file atomically.
    with claim_output(_out_path(args), kind=KIND, overwrite=args.overwrite, file=True):
        return handler(args)


# --------------------------------------------------------------------------- handlers


def _out_path(args: argparse.Namespace) -> Path:
    path = Path(args.out)
    if path.suffix != ".safetensors" and path.name not in ("", "..") and not path.is_dir():
        path = Path(f"{path}.safetensors")  # as SteeringVector.save names it
    return path  # a folder stays as given, for claim_output to refuse by name


def _save(vector: SteeringVector, path: Path) -> dict[str, Any]:
    return summary(vector, vector.save(path))


def _model(args: argparse.Namespace) -> Model:
    return load_model(args.model)


def _texts_of(args: argparse.Namespace) -> tuple[Any, Any]:
    # Without --limit the spec itself is passed on, so a built-in set is recorded by name.
    if args.limit is None:
        return args.pos_file, args.neg_file
    check(args.limit >= 1, f"--limit {args.limit} must be at least 1")
    pos = load_text_set(args.pos_file, "positive text set")[: args.limit]
    neg = load_text_set(args.neg_file, "negative text set")[: args.limit]
    return pos, neg


def _from_prompts(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.build import from_prompts

    path = _out_path(args)
    v = from_prompts(_model(args), args.pos, args.neg, args.layer, site=args.site)
    return _save(v, path)


def _from_datasets(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.build import from_datasets

    path = _out_path(args)
    pos, neg = _texts_of(args)
    v = from_datasets(
        _model(args), pos, neg, args.layer, args.positions, args.site, max_tokens=args.max_tokens
    )
    return _save(v, path)


def _probe(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.build import from_probe

    path = _out_path(args)
    pos, neg = _texts_of(args)
    v = from_probe(
        _model(args),
        pos,
        neg,
        args.layer,
        args.positions,
        site=args.site,
        test_size=args.test_size,
        seed=args.seed,
        C=args.C,
        max_tokens=args.max_tokens,
    )
    return _save(v, path)


def _iti(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.iti import from_iti

    path = _out_path(args)
    pos, neg = _texts_of(args)
    v = from_iti(
        _model(args),
        pos,
        neg,
        k=args.k,
        positions=args.positions,
        test_size=args.test_size,
        seed=args.seed,
        C=args.C,
        max_tokens=args.max_tokens,
    )
    return _save(v, path)


def _from_component(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.dictionary import from_component

    path = _out_path(args)
    v = from_component(
        args.dictionary, args.index, args.sign, args.layer, model=args.model, site=args.site
    )
    return _save(v, path)


def _from_sae(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.dictionary import from_sae_feature

    path = _out_path(args)
    v = from_sae_feature(
        args.sae, args.feature, args.layer, model=args.model, site=args.site, sign=args.sign
    )
    return _save(v, path)


def _random(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.build import random_like

    path = _out_path(args)
    return _save(random_like(SteeringVector.load(args.like), args.seed), path)


def _info(args: argparse.Namespace) -> dict[str, Any]:
    v = SteeringVector.load(args.file)
    out = summary(v, Path(args.file))
    out["recipe"] = _shorten(v.recipe)
    return out


# --------------------------------------------------------------------------- output


def summary(v: SteeringVector, path: Path | None) -> dict[str, Any]:
    """The JSON summary of a vector that every sub-verb prints."""
    norms = {str(k): round(v.norm(k), 6) for k in v.layers}
    units = {
        str(k): round(v.norm(k) / v.layer_norms[k], 6) for k in v.layers if v.layer_norms.get(k)
    }
    return {
        "path": None if path is None else str(path),
        "method": v.method,
        "model": v.model,
        "d_model": v.d_model,
        "site": v.site,
        "layers": v.layers,
        "shapes": {str(k): list(t.shape) for k, t in v.directions.items()},
        "norms": norms,
        "layer_norms": {str(k): round(x, 6) for k, x in v.layer_norms.items()},
        "norms_in_residual_units": units,
        "layer_convention": {str(k): Site(v.site, k).convention for k in v.layers},
        "info": v.info,
    }


def _shorten(obj: Any) -> Any:
    """Replace long lists of texts by a count, so a recipe prints in a few lines."""
    if isinstance(obj, dict):
        return {k: _shorten(x) for k, x in obj.items()}
    if isinstance(obj, list) and len(obj) > 8 and all(isinstance(x, str) for x in obj):
        return f"<{len(obj)} texts>"
    if isinstance(obj, list):
        return [_shorten(x) for x in obj]
    return obj


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render(result: dict[str, Any]) -> str:
    if "format" in result:  # export
        lines = [f"wrote {result['file']} ({result['format']})"]
        lines += [
            f"  our {ours} -> llama.cpp {theirs}" for ours, theirs in result["layers"].items()
        ]
        lines.append(f"  use: {result['use']}")
        return "\n".join(lines)
    lines = [
        f"{result['method']} vector for {result['model']} (d_model {result['d_model']}), "
        f"site {result['site']}" + (f" -> {result['path']}" if result.get("path") else "")
    ]
    units = result["norms_in_residual_units"]
    for k in map(str, result["layers"]):
        rel = (
            f" = {_fmt(units[k])} x mean norm there ({_fmt(result['layer_norms'][k])})"
            if k in units
            else ""
        )
        lines.append(
            f"  layer {k}: shape {tuple(result['shapes'][k])}, norm {_fmt(result['norms'][k])}"
            + rel
        )
        lines.append(f"    {result['layer_convention'][k]}")
    # The info block comes from a file: entries of an unexpected shape are skipped, not trusted.
    info = dict(result["info"])
    heads = info.pop("heads", None)
    info.pop("accuracy_table", None)
    for key, value in info.items():
        if isinstance(value, (int, float, str)) or value is None:
            lines.append(f"  {key}: {_fmt(value)}")
        elif key == "separation" and isinstance(value, dict):
            for layer, sep in value.items():
                if isinstance(sep, dict):
                    lines.append(
                        f"  separation at layer {layer}: AUROC {_fmt(sep.get('auroc'))}, "
                        f"accuracy {_fmt(sep.get('accuracy'))}"
                    )
        elif key == "pairs" and isinstance(value, list):
            for pair in value:
                if isinstance(pair, dict):
                    lines.append(f"  pair: {pair.get('pos_tokens')} - {pair.get('neg_tokens')}")
    if isinstance(heads, list) and heads:
        lines.append("  heads (layer.head accuracy sigma):")
        lines.extend(
            f"    {h.get('layer')}.{h.get('head')}  {_fmt(h.get('accuracy'))}  "
            f"{_fmt(h.get('sigma'))}"
            for h in heads
            if isinstance(h, dict)
        )
    if "recipe" in result:
        lines.append(f"  recipe: {result['recipe']}")
    return "\n".join(lines)


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.parse import number
    from workbench.vectors.llamacpp import export_control_vector, llamacpp_layer

    vector = SteeringVector.load(args.file)
    row: str | int | None = args.row
    if row is not None and row not in ("mean", "last"):
        check(str(row).isdigit(), f"--row {row!r}: use mean, last or a row index")
        row = int(row)
    coeff = None if args.coeff is None else number(args.coeff, "--coeff")
    path = export_control_vector(
        vector, args.output, coeff=coeff, units=args.units, row=row, model_hint=args.model_hint
    )
    mapping = {
        f"{vector.site} {layer}": f"direction.{llamacpp_layer(vector.site, layer)}"
        for layer in vector.layers
    }
    return {
        "file": str(path),
        "format": "gguf (llama.cpp control vector)",
        "layers": mapping,
        "coeff_folded": coeff,
        "use": f"llama-cli -m MODEL.gguf --control-vector{'' if coeff else '-scaled'} {path}"
        + ("" if coeff else " COEFF"),
    }


def _import(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.vectors.llamacpp import import_control_vector

    vector = import_control_vector(args.file, _model(args))
    return _save(vector, _out_path(args))
