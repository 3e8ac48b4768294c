"""``workbench capture``: record activations over a corpus into an on-disk store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.activations.batches import ROW_POSITIONS
from workbench.activations.capture import DEFAULT_SHARD_ROWS, capture
from workbench.activations.ray_capture import capture_ray
from workbench.activations.ray_session import connect
from workbench.activations.writer import claim_store
from workbench.errors import WorkbenchError
from workbench.model.hooks import SITE_KINDS
from workbench.model.load import DEFAULT_MODEL, load_model

NAME = "capture"
HELP = "capture activations over a corpus into a store on disk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--corpus", required=True, help="builtin:NAME, a .txt (one document per line) or .jsonl"
    )
    parser.add_argument("--layers", required=True, help="comma-separated layers, e.g. 4,8,12")
    parser.add_argument(
        "--site",
        default="resid_pre",
        choices=SITE_KINDS,
        help="where (default resid_pre: layer L is the input of block L, transformers' "
        "hidden_states[L], as for the vector builders and discover; z: per-head outputs)",
    )
    parser.add_argument(
        "--positions",
        default="all",
        choices=ROW_POSITIONS,
        help="all tokens but BOS (default), each document's last token, or its mean",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="cut longer documents (BOS included)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="documents per forward pass")
    parser.add_argument(
        "--store-dtype",
        default="float16",
        choices=("float16", "float32"),
        help="on-disk precision of the rows (default float16; --dtype is the model's)",
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=DEFAULT_SHARD_ROWS,
        help=f"rows per shard file; bounds memory (default {DEFAULT_SHARD_ROWS})",
    )
    parser.add_argument("--out", required=True, help="folder for the store")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted store")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="split the corpus across Ray actors (pip install -e .[ray]): alone for a local "
        "instance, auto or HOST:PORT for a cluster started with `ray start --head`",
    )
    parser.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        help="Ray actors, one model each (default: one per GPU, else one per CPU)",
    )


def parse_layers(text: str) -> list[int]:
    """``"4,8,12"`` -> ``[4, 8, 12]``."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise WorkbenchError(
            f"--layers {text!r} is not a list of layers; write e.g. --layers 4,8,12"
        )
    return layers


def run(args: argparse.Namespace) -> dict[str, Any]:
    layers = parse_layers(args.layers)
    # Claim (check and lock) the store before spending seconds loading the model; capture()
    # claims it again, sharing this lock.
    claim, _ = claim_store(
        Path(args.out).expanduser(), resume=args.resume, overwrite=args.overwrite
    )
    with claim:
        if args.ray is not None:  # before the model loads: a bad address fails at once
            connect(args.ray)
        return _capture(args, layers)


def _capture(args: argparse.Namespace, layers: list[int]) -> dict[str, Any]:
    model = load_model(args.model)
    options: dict[str, Any] = dict(
        site=args.site,
        positions=args.positions,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        dtype=args.store_dtype,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        shard_rows=args.shard_rows,
    )
    try:
        if args.ray is not None:
            result = capture_ray(
                model, args.corpus, layers, address=args.ray, workers=args.ray_workers, **options
            )
        else:
            result = capture(
                model, args.corpus, layers, progress_bar=not args.no_progress, **options
            )
    except KeyboardInterrupt:
        print(
            f"capture interrupted: completed shards are kept in {args.out}; "
            "rerun the same command with --resume to continue",
            file=sys.stderr,
        )
        raise
    keys = ("path", "model", "site", "layers", "positions", "tokens", "d_model", "tokens_per_s")
    data = result.to_json()
    return {
        **{k: data[k] for k in keys},
        **{k: data[k] for k in data if k not in keys},
    }


def render(result: dict[str, Any]) -> str:
    layers = ", ".join(str(x) for x in result["layers"])
    lines = []
    if result["already_complete"]:
        lines.append(f"store {result['path']} is already complete; nothing to do")
    lines += [
        f"captured {result['tokens']:,} tokens ({result['rows']:,} rows, {result['docs']:,} "
        f"documents, positions={result['positions']}) at {result['site']} layer(s) {layers} "
        f"of {result['model']}",
        f"store: {result['path']} ({result['shards']} shards, {result['dtype']}, "
        f"width {result['d_model']})",
    ]
    if not result["already_complete"]:
        lines.append(f"speed: {result['tokens_per_s']:,.0f} tokens/s")
    if result["truncated"]:
        lines.append(
            f"note: {result['truncated']} document(s) were longer than "
            f"{result['truncation_limit']} tokens and were cut to their first "
            f"{result['truncation_limit']} (recorded in the manifest)"
        )
    return "\n".join(lines)
