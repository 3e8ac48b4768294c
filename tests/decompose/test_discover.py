from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import dictionaries
from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.discover import Discovery, ProbeSettings, discover, row_steering
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.inspect import component_codes
from workbench.errors import WorkbenchError
from workbench.measure.metrics import next_token_kl, sequence_perplexity
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.generate import generate
from workbench.steer.plan import SteeringPlan
from workbench.vectors.vector import SteeringVector

LAYER = 1
SETTINGS = ProbeSettings(
    n_prompts=3, n_damage=3, max_new_tokens=4, batch_size=7, damage_max_tokens=16
)


@pytest.fixture(scope="module")
def store(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    out = tmp_path_factory.mktemp("discover") / "acts"
    docs = load_corpus("builtin:general", limit=20)
    capture(tiny_model, docs, [LAYER], site="resid_pre", max_tokens=24, out=out, progress_bar=False)
    return ActivationStore.open(out)


@pytest.fixture(scope="module")
def found(tiny_model: Model, store: ActivationStore) -> tuple[dictionaries.Dictionary, Discovery]:
    pca = fit_from_store(make_dictionary("pca", 3), store, LAYER)
    return pca, discover(tiny_model, pca, store, settings=SETTINGS)


def test_discover_ranks_both_signs_of_every_component(
    tiny_model: Model, found: tuple[dictionaries.Dictionary, Discovery], tmp_path: Path
) -> None:
    pca, result = found
    cands = result.candidates
    assert sorted((c.index, c.sign) for c in cands) == [(i, s) for i in range(3) for s in (-1, 1)]
    scores = [c.score for c in cands]
    assert scores == sorted(scores, reverse=True)
    for c in cands:
        assert c.effect > 0 and c.damage >= 0
        assert c.score == pytest.approx(c.effect / (c.damage + SETTINGS.eps))
        assert c.damage == pytest.approx(max(0.0, float(np.log(c.ppl_ratio))), abs=1e-9)
        assert len(c.top_tokens) == SETTINGS.n_top_tokens and c.label.startswith(
            f"{'+' if c.sign > 0 else '-'}{c.index}: "
        )
    result.save(tmp_path)
    data = json.loads((tmp_path / "discover.json").read_text())
    assert (data["layer"], data["method"], data["k"]) == (LAYER, "pca", 3)
    required = {
        "index",
        "sign",
        "label",
        "top_tokens",
        "effect",
        "damage",
        "score",
        "vector_path",
        "completion",
    }
    assert all(required <= set(c) for c in data["candidates"])
    assert [c["score"] for c in data["candidates"]] == scores
    for c in data["candidates"]:
        vec = SteeringVector.load(c["vector_path"])
        direction = c["sign"] * torch.from_numpy(pca.components_[c["index"]])
        assert torch.allclose(vec.directions[LAYER], direction)
        assert (vec.model, vec.site, vec.method) == (tiny_model.name, "resid_pre", "component")
        assert vec.info["label"] == c["label"] and vec.layer_norms[LAYER] > 0


def test_batched_probes_equal_one_plan_per_candidate(
    tiny_model: Model, found: tuple[dictionaries.Dictionary, Discovery]
) -> None:
    _, result = found
    prompts = load_corpus(SETTINGS.prompts, limit=SETTINGS.n_prompts)
    held_out = load_corpus(SETTINGS.damage_texts)[-SETTINGS.n_damage :]
    clean = steered_logits(tiny_model, prompts)
    clean_ppl = sequence_perplexity(*steered_logits(tiny_model, held_out, max_tokens=16))
    for c in (result.candidates[0], result.candidates[-1]):
        plan = SteeringPlan.of(c.vector, SETTINGS.scale, units="norm")
        steered = steered_logits(tiny_model, prompts, plan)
        last = clean.mask.sum(1) - 1
        kl = next_token_kl(steered.logits, clean.logits, position=last)
        assert c.effect == pytest.approx(float(kl.mean()), rel=1e-4)
        ppl = sequence_perplexity(*steered_logits(tiny_model, held_out, plan, max_tokens=16))
        log_ratio = float((ppl.log() - clean_ppl.log()).mean())
        assert np.log(c.ppl_ratio) == pytest.approx(log_ratio, rel=1e-4, abs=1e-6)
        moderate = SteeringPlan.of(c.vector, SETTINGS.completion_scale, units="norm")
        gen = generate(tiny_model, prompts[0], moderate, max_new_tokens=4, temperature=0.0)
        assert gen.texts[0] == c.completion
    unsteered = generate(tiny_model, prompts[0], max_new_tokens=4, temperature=0.0)
    assert unsteered.texts[0] == result.unsteered_completion


def test_row_steering_adds_each_rows_vector_and_cleans_up(tiny_model: Model) -> None:
    ids, _, _ = tiny_model.encode(["The weather today is", "The weather today is"])
    with torch.inference_mode():
        clean = tiny_model.tl(ids)
        with row_steering(tiny_model, Site("resid_pre", LAYER), "tl") as state:
            state.deltas = torch.stack([torch.zeros(64), torch.full((64,), 5.0)])
            mixed = tiny_model.tl(ids)
            state.deltas = torch.zeros(3, 64)
            with pytest.raises(WorkbenchError, match="3 row vectors for a batch of 2"):
                tiny_model.tl(ids)
        after = tiny_model.tl(ids)
    assert torch.allclose(mixed[0], clean[0], atol=1e-5)
    assert not torch.allclose(mixed[1], clean[1], atol=1e-2)
    assert torch.equal(after, clean)


def test_discover_refuses_a_store_of_another_model(
    tiny_gpt2: Model, store: ActivationStore, found: tuple[dictionaries.Dictionary, Discovery]
) -> None:
    pca, _ = found
    with pytest.raises(WorkbenchError) as e:
        discover(tiny_gpt2, pca, store, settings=SETTINGS)
    assert tiny_gpt2.name in str(e.value) and str(store.manifest["model"]) in str(e.value)
    with pytest.raises(WorkbenchError, match="scale"):
        ProbeSettings(scale=0.0)


@pytest.mark.real_model
def test_pca_of_two_topics_separates_them(default_model: Model, tmp_path: Path) -> None:
    wedding = load_corpus("builtin:wedding", limit=40)
    sports = load_corpus("builtin:sports", limit=40)
    capture(
        default_model,
        wedding + sports,
        [8],
        site="resid_post",
        positions="mean",
        max_tokens=32,
        out=tmp_path / "acts",
        progress_bar=False,
    )
    store = ActivationStore.open(tmp_path / "acts")
    pca = fit_from_store(make_dictionary("pca", 3), store, 8)
    codes = component_codes(pca, store, 8, [0, 1, 2])  # (docs, 3)
    topic = (store.rows_meta().doc.numpy() < len(wedding)).astype(int)
    aurocs = [roc_auc_score(topic, codes[:, i]) for i in range(3)]
    assert max(max(a, 1 - a) for a in aurocs) > 0.9
