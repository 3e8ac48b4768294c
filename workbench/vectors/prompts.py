"""ActAdd steering vectors from prompt pairs, kept per position.

As in "Steering GPT-2-XL by adding an activation vector": each prompt is run with BOS, the
shorter of a pair is padded on the right with space tokens (the tokenizer's id for ``" "``) so
both span the same positions, and the vector is the per-position difference of the two
activations at the chosen layers. Row 0 (BOS) is zero: under causal attention that position is
the same for every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workbench.activations.collect import check_layers, run_sites
from workbench.errors import check
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.vectors.assemble import assemble
from workbench.vectors.vector import SteeringVector

RESID_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


def check_site(site: str) -> str:
    check(
        site in RESID_SITES,
        f"site '{site}' is not a d_model-wide site: use one of {', '.join(RESID_SITES)} "
        "(head-level vectors at site z are built with from_iti / `workbench vector iti`)",
    )
    return site


# --------------------------------------------------------------------------- prompt pairs


def space_token_id(model: Model) -> int:
    """The tokenizer's id for ``" "``, which ActAdd pads the shorter prompt with."""
    ids = list(model.tokenizer(" ", add_special_tokens=False)["input_ids"])
    check(
        len(ids) == 1,
        f"the tokenizer of {model.name} has no single token for ' ' (got {ids}); prompt-pair "
        "padding needs one: make the prompts the same length in tokens instead",
    )
    return int(ids[0])


def from_prompts(
    model: Model,
    pos: str | Sequence[str],
    neg: str | Sequence[str],
    layers: int | Sequence[int],
    site: str = "resid_pre",
) -> SteeringVector:
    """ActAdd: per-position activation difference of prompt pairs, ``act(pos) - act(neg)``.

    Each prompt is tokenised with BOS (as ActAdd's TransformerLens code does); the shorter of a
    pair is padded on the right with space tokens to equal length. The vector keeps one row per
    position, ``(pos, d_model)``, at every layer in ``layers`` (row 0, BOS, is zero). Several
    pairs (equal-length lists) give the mean of their front-aligned differences, i.e. each pair
    applied with ``1/n`` of the coefficient.

    Example:
        >>> v = from_prompts(model, "Love", "Hate", layers=6)   # doctest: +SKIP
        >>> v.directions[6].shape                               # doctest: +SKIP
        torch.Size([2, 576])
    """
    pos_list = [pos] if isinstance(pos, str) else list(pos)
    neg_list = [neg] if isinstance(neg, str) else list(neg)
    check(
        len(pos_list) == len(neg_list) and len(pos_list) > 0,
        f"prompt pairs need as many positive as negative prompts (got {len(pos_list)} and "
        f"{len(neg_list)}): give one --neg per --pos",
    )
    for p in (*pos_list, *neg_list):
        check(
            isinstance(p, str) and p != "",
            "a prompt is empty: give text (ActAdd pairs like 'Love' / 'Hate', or ' ' for spaces)",
        )
    layer_list = check_layers(model, layers)
    check_site(site)
    space = space_token_id(model)
    sites = [Site(site, layer) for layer in layer_list]
    diffs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layer_list}
    pair_info: list[dict[str, Any]] = []
    for p, n in zip(pos_list, neg_list, strict=True):
        rows = [_prompt_ids(model, x) for x in (p, n)]
        width = max(len(r) for r in rows)
        padded = [r + [space] * (width - len(r)) for r in rows]
        acts = run_sites(model, torch.tensor(padded), sites)  # site -> (2, pos, d_model)
        for s in sites:
            diffs[s.layer].append(acts[s][0] - acts[s][1])  # (pos, d_model)
        pair_info.append(
            {
                "pos_tokens": [model.tokenizer.decode([t]) for t in padded[0]],
                "neg_tokens": [model.tokenizer.decode([t]) for t in padded[1]],
                "n_pad": {"pos": width - len(rows[0]), "neg": width - len(rows[1])},
            }
        )
    directions = {layer: _mean_front_aligned(d) for layer, d in diffs.items()}
    return assemble(
        model,
        directions,
        site=site,
        method="prompt_pair",
        recipe={"pos": pos_list, "neg": neg_list, "layers": layer_list, "site": site},
        info={"pairs": pair_info, "space_token_id": space, "bos": model.bos_token_id},
    )


def _prompt_ids(model: Model, text: str) -> list[int]:
    ids, _, truncated = model.encode([text])  # one text: no padding
    check(not truncated[0], f"prompt {text[:40]!r} is longer than the context of {model.name}")
    return [int(t) for t in ids[0]]


def _mean_front_aligned(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(r.shape[0] for r in rows)
    out = torch.zeros(width, rows[0].shape[1])  # (pos, d_model)
    for r in rows:
        out[: r.shape[0]] += r
    return out / len(rows)
