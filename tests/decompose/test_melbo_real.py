"""MELBO on the embedded model (issue 15), with the defaults the README reports (R = 1/32 of the
source layer's residual norm, displacement measured as direction): the learned vectors move the
target layer more than random directions of the same norm, with an interval, and at least half of
them change sampled completions (consistent new words) at a coefficient within the damage
budget while beating random directions at the same damage."""

from __future__ import annotations

import pytest

from workbench.decompose.discover import Discovery
from workbench.decompose.learned import DEFAULT_MEASURE, DEFAULT_RADIUS
from workbench.decompose.trials import TrialSettings
from workbench.decompose.unsupervised import discover_unsupervised
from workbench.model.load import Model

pytestmark = pytest.mark.real_model
K = 4


@pytest.fixture(scope="module")
def found(default_model: Model) -> Discovery:
    settings = TrialSettings(n_completion_prompts=6, max_new_tokens=20)
    return discover_unsupervised(
        default_model, "melbo", source=6, k=K, iterations=20, n_prompts=8, settings=settings
    )


def test_learned_vectors_move_the_target_layer_more_than_random(found: Discovery) -> None:
    learned = found.extra["learned"]
    assert learned["target_layer"] == 17  # halfway from 6 to the last layer (29)
    assert learned["radius"] == DEFAULT_RADIUS and learned["measure"] == DEFAULT_MEASURE
    moved = learned["displacement_vs_random"]
    lo, hi = moved["ratio_ci"]
    assert 2.0 < lo <= moved["ratio"] <= hi
    assert min(moved["per_vector"]) > 1.0


def test_half_the_vectors_change_completions_within_the_damage_budget(found: Discovery) -> None:
    budget = found.settings.damage_budget
    changed = {
        c.index
        for c in found.candidates
        if c.suggested_coeff is not None
        and c.ppl_ratio is not None
        and c.ppl_ratio <= budget
        and not c.inert
        and c.contrastive_words
    }
    assert len(changed) >= K / 2, [(c.name, c.contrastive_words) for c in found.candidates]
