"""Candidate names and warning flags: what the CLI's JSON and the dashboard's badge show."""

from __future__ import annotations

import dataclasses

import torch

from workbench.decompose.discover import Candidate, candidate_flags, candidate_name, over_budget
from workbench.vectors.vector import SteeringVector


def _candidate(**kw: object) -> Candidate:
    vec = SteeringVector({2: torch.ones(4)}, model="m", d_model=4, site="resid_pre")
    base = Candidate(
        index=2,
        sign=-1,
        label="c002neg: x",
        suggested_coeff=0.2,
        ppl_ratio=1.2,
        capped=False,
        effect=0.3,
        effect_vs_random=2.0,
        inert=False,
        score=1.0,
        contrastive_words=[],
        completions=[],
        top_tokens=[],
        lens_tokens=[],
        variance_share=0.1,
        between_doc_share=0.5,
        active_fraction=0.1,
        docs=[],
        opposite_docs=[],
        vector=vec,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_one_name_per_candidate() -> None:
    assert candidate_name(2, -1) == "c002neg" == _candidate().name
    assert candidate_name(13, 1) == "c013pos"


def test_within_budget_has_no_flags() -> None:
    c = _candidate()
    assert not over_budget(c, 1.25) and candidate_flags(c, 1.25) == []


def test_over_budget_is_flagged_first_with_its_numbers() -> None:
    c = _candidate(ppl_ratio=33.8, inert=True)
    assert over_budget(c, 1.25)
    flags = candidate_flags(c, 1.25)
    assert flags[0].startswith("over the damage budget") and "x33.8 > x1.25" in flags[0]
    assert flags[1].startswith("inert")
    none = _candidate(suggested_coeff=None, ppl_ratio=40.0, inert=True)
    assert over_budget(none, 1.25)
    assert candidate_flags(none, 1.25) == [
        "over the damage budget: even the smallest coefficient raises held-out perplexity past "
        "x1.25 (x40)"
    ]
