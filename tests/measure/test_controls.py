"""Matched controls and specificity: the statistics, the control vectors, and a planted case
where a topic vector is specific and a generic one is not (and the report says which)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.measure.controls import (
    CONTROL_WORDS,
    against_controls,
    check_controls,
    matched_controls,
    specificity,
)
from workbench.measure.effects import MeasureSpec, default_effect, measure_vector
from workbench.measure.stats import bootstrap_ratio
from workbench.model.load import Model
from workbench.report.write import write_run
from workbench.vectors.build import from_prompts, mean_residual_norms
from workbench.vectors.vector import SteeringVector

# --------------------------------------------------------------------------- statistics


def test_specificity_sign_value_and_interval() -> None:
    on = np.full(6, np.exp(-0.5))  # on-target perplexity x0.61
    off = np.full(6, np.exp(-0.1))  # off-target x0.90
    est = specificity(on, off)
    assert est.value == pytest.approx(0.4)
    assert est.low <= est.value <= est.high
    rng = np.random.default_rng(0)
    noisy = specificity(on * np.exp(rng.normal(0, 0.1, 6)), off * np.exp(rng.normal(0, 0.1, 6)))
    assert 0 < noisy.low < noisy.value < noisy.high
    # the same effect on both sets is not specific, in either order
    assert specificity(off, on).value == pytest.approx(-0.4)
    assert specificity(on, on).value == 0.0


def test_against_controls_tells_specific_from_generic() -> None:
    rng = np.random.default_rng(1)

    def ratios(log_mean: float, n: int = 12) -> np.ndarray:
        return np.exp(log_mean + rng.normal(0, 0.05, n))

    controls_on = [ratios(-0.3) for _ in range(8)]
    controls_off = [ratios(-0.3) for _ in range(8)]
    specific = against_controls(ratios(-0.6), ratios(-0.3), controls_on, controls_off)
    assert specific.status == "specific"
    assert specific.beats == 8 and specific.p_value is not None and specific.p_value < 0.01
    assert specific.verdict.startswith("specific:") and "8 of 8" in specific.verdict

    generic = against_controls(ratios(-0.3), ratios(-0.3), controls_on, controls_off)
    assert generic.status == "generic"
    assert generic.p_value is not None and generic.p_value > 0.05
    assert generic.verdict.startswith("generic:")
    js = generic.to_json()
    assert len(js["specificity_ci"]) == 2 and len(js["control_specificity"]) == 8

    # without controls the verdict rests on the interval alone, and says so
    alone = against_controls(ratios(-0.6), ratios(-0.3), [], [])
    assert alone.status == "specific" and alone.p_value is None
    assert "no controls" in alone.verdict
    assert against_controls(ratios(-0.3), ratios(-0.6), [], []).status == "reverse"


def test_permutation_p_is_not_small_when_the_vector_is_one_of_its_controls() -> None:
    """Under the null (the vector drawn like its controls) p is roughly uniform: over many
    draws, about 5% fall below 0.05."""
    rng = np.random.default_rng(2)
    small = 0
    for _ in range(40):
        rows = [np.exp(rng.normal(-0.2, 0.1, (2, 10))) for _ in range(9)]
        cmp = against_controls(
            rows[0][0], rows[0][1], [r[0] for r in rows[1:]], [r[1] for r in rows[1:]], n_perm=400
        )
        small += cmp.p_value is not None and cmp.p_value < 0.05
    assert small <= 6


@pytest.mark.parametrize("k", [-1, len(CONTROL_WORDS) + 1, True, 2.5])
def test_check_controls_refuses_bad_counts(k: object) -> None:
    with pytest.raises(WorkbenchError, match="--controls"):
        check_controls(k)  # type: ignore[arg-type]
    assert check_controls(0) == 0 and check_controls(len(CONTROL_WORDS)) == len(CONTROL_WORDS)


def test_bootstrap_ratio() -> None:
    est = bootstrap_ratio([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert est is not None and est.value == pytest.approx(0.5)
    assert est.low == pytest.approx(0.5) and est.high == pytest.approx(0.5)
    assert bootstrap_ratio([1.0, 2.0], [0.0, 0.0]) is None
    with pytest.raises(WorkbenchError, match="differ in length"):
        bootstrap_ratio([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------- control vectors


def test_word_controls_are_built_like_the_vector(tiny_model: Model) -> None:
    vec = from_prompts(tiny_model, " wedding", " ", [1])
    texts = ["The football match ended in rain.", "Music and history."]
    ctrls, _ = matched_controls(tiny_model, vec, 1, 5, seed=3, texts=texts)
    assert len(ctrls) == 5 and all(c.kind == "word" for c in ctrls)
    words = [str(c.prompt) for c in ctrls]
    assert all(w.startswith(" ") and w.strip() in CONTROL_WORDS for w in words)
    assert "football" not in {w.strip() for w in words}  # occurs in the measured texts
    for c in ctrls:
        assert c.vector.method == "prompt_pair" and c.vector.recipe["neg"] == [" "]
        assert c.vector.layers == [1] and c.vector.site == vec.site
    again, _ = matched_controls(tiny_model, vec, 1, 5, seed=3, texts=texts)
    assert [c.prompt for c in again] == words  # seeded
    other, _ = matched_controls(tiny_model, vec, 1, 5, seed=4, texts=texts)
    assert [c.prompt for c in other] != words
    # a capitalised prompt gets capitalised control words
    love = from_prompts(tiny_model, "Love", "Hate", [1])
    caps, _ = matched_controls(tiny_model, love, 1, 3)
    assert all(str(c.prompt)[0].isupper() for c in caps)


def test_other_vectors_get_norm_matched_random_controls(tiny_model: Model) -> None:
    vec = SteeringVector({2: torch.randn(tiny_model.d_model)}, tiny_model.name, tiny_model.d_model)
    ctrls, _ = matched_controls(tiny_model, vec, 2, 3, seed=5)
    assert [c.seed for c in ctrls] == [5, 6, 7]
    for c in ctrls:
        assert c.kind == "random"
        assert c.vector.norm(2) == pytest.approx(vec.norm(2), rel=1e-5)


def test_too_many_controls_for_the_texts_is_a_one_line_error(tiny_model: Model) -> None:
    vec = from_prompts(tiny_model, " wedding", " ", [1])
    with pytest.raises(WorkbenchError, match="control words do not occur"):
        matched_controls(tiny_model, vec, 1, len(CONTROL_WORDS), texts=[" ".join(CONTROL_WORDS)])


def test_identical_on_and_off_target_text_is_refused() -> None:
    with pytest.raises(WorkbenchError, match="same"):
        MeasureSpec(on_target=["a b c", "d e"], off_target=["d e", "a b c"])


# --------------------------------------------------------------------------- planted case

ON_WORDS = ["wedding", "bride", "vows", "ceremony", "aisle"]
OFF_WORDS = ["football", "rain", "music", "law", "history"]


def _sentences(words: list[str], seed: int, n: int = 10) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(f"the {w} and" for w in rng.choice(words, size=4)).capitalize() + "."
        for _ in range(n)
    ]


def _ids(model: Model, texts: list[str]) -> set[int]:
    return {t for s in texts for t in model.tokenizer(s, add_special_tokens=False)["input_ids"]}


def _readout(model: Model, ids: set[int], layer: int) -> SteeringVector:
    """A direction at ``layer`` that raises the logits of ``ids`` (their unembedding rows)."""
    assert model.hf is not None
    unembed = model.hf.lm_head.weight.detach()  # (vocab, d_model)
    d = unembed[sorted(ids)].mean(0) - unembed.mean(0)  # (d_model,)
    d = d / d.norm()
    return SteeringVector(
        {layer: d}, model.name, model.d_model, method="custom", recipe={"planted": True}
    )


def test_planted_topic_vector_is_specific_and_a_generic_one_is_not(
    tiny_model: Model, tmp_path: Path
) -> None:
    on, off = _sentences(ON_WORDS, 0), _sentences(OFF_WORDS, 1)
    on_ids, off_ids = _ids(tiny_model, on), _ids(tiny_model, off)
    layer = tiny_model.n_layers - 1
    topic = _readout(tiny_model, on_ids - off_ids, layer)
    generic = _readout(tiny_model, on_ids & off_ids, layer)  # "the", "and", ".": both sets
    coeff = 3 * mean_residual_norms(tiny_model, [layer])[layer]
    spec = MeasureSpec(on_target=on, off_target=off, batch_size=64)
    effect = default_effect(spec, "on_target")
    verdicts = {}
    for name, vec in (("topic", topic), ("generic", generic)):
        data = measure_vector(
            tiny_model, vec, coeff, spec, effect, controls=8, control_seed=0, label=name
        )
        s = data["specificity"]
        assert data["matched_controls"]["kind"] == "random"
        assert len(s["control_specificity"]) == 8
        verdicts[name] = s
        report = Path(write_run(tmp_path / name, data)["report"]).read_text()
        assert s["verdict"].split(":")[0] in report and "Specificity against" in report
    assert verdicts["topic"]["status"] == "specific", verdicts["topic"]["verdict"]
    assert verdicts["topic"]["specificity_ci"][0] > 0
    assert verdicts["topic"]["beats_controls"] == 8 and verdicts["topic"]["p_value"] < 0.05
    assert verdicts["generic"]["status"] != "specific", verdicts["generic"]["verdict"]
    assert verdicts["generic"]["p_value"] > 0.05
