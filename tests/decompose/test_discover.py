from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import dictionaries
from workbench.activations.capture import capture
from workbench.activations.collect import collect
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.component_stats import doc_mean_codes
from workbench.decompose.discover import Discovery, discover
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.hygiene import Hygiene
from workbench.decompose.inspect import component_codes
from workbench.decompose.trials import TrialSettings, row_steering
from workbench.errors import WorkbenchError
from workbench.measure.metrics import next_token_kl, sequence_perplexity
from workbench.measure.spec import actadd_sampling
from workbench.model.hooks import Site
from workbench.model.load import Model
from workbench.steer.forward import steered_logits
from workbench.steer.generate import generate
from workbench.steer.plan import SteeringPlan
from workbench.testing import planted_store
from workbench.vectors.build import random_like
from workbench.vectors.vector import SteeringVector

LAYER = 1
SETTINGS = TrialSettings(
    n_prompts=3,
    n_damage=3,
    max_new_tokens=4,
    n_completion_prompts=2,
    batch_size=7,
    damage_max_tokens=16,
    n_random=2,
)


@pytest.fixture(scope="module")
def planted(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("planted") / "acts"
    u = planted_store(path, tiny_model, layer=LAYER)
    return path, u.numpy()


@pytest.fixture(scope="module")
def found(
    tiny_model: Model, planted: tuple[Path, np.ndarray]
) -> tuple[dictionaries.Dictionary, Discovery]:
    store = ActivationStore.open(planted[0])
    pca = fit_from_store(make_dictionary("pca", 4), store, LAYER)
    return pca, discover(tiny_model, pca, store, settings=SETTINGS, rank_by="between")


def test_hygiene_turns_the_first_component_from_massive_tokens_to_the_planted_property(
    tiny_model: Model, planted: tuple[Path, np.ndarray]
) -> None:
    path, u = planted
    store = ActivationStore.open(path)
    raw = fit_from_store(make_dictionary("pca", 4), store, LAYER, hygiene=Hygiene.off())
    assert abs(raw.directions_[0, 0]) > 0.99  # "first token": the massive dimension
    clean = fit_from_store(make_dictionary("pca", 4), store, LAYER)
    assert abs(float(clean.directions_[0] @ u)) > 0.95
    record = clean.fit_stats_["input"]
    assert record["dropped_norm"] == 60 and record["scale"] == "standardize"
    assert record["norm_threshold"] == pytest.approx(3 * record["median_norm"])


def test_the_planted_property_is_found_and_ranked_first(
    found: tuple[dictionaries.Dictionary, Discovery], planted: tuple[Path, np.ndarray]
) -> None:
    pca, result = found
    _, u = planted
    top = result.candidates[0]
    direction = top.vector.directions[LAYER].numpy()
    assert abs(float(direction @ u)) > 0.95
    assert top.between_doc_share is not None and top.between_doc_share > 0.9
    # Its documents are the planted half: alternating documents, all of one parity.
    parities = {d.doc % 2 for d in top.docs}
    assert len(parities) == 1 and {d.doc % 2 for d in top.opposite_docs} == {1 - parities.pop()}
    # The rows of every document's first token (massive) never become contexts.
    assert all("[[" in d.peak for d in top.docs)


def test_candidates_are_calibrated_ranked_and_saved(
    tiny_model: Model, found: tuple[dictionaries.Dictionary, Discovery], tmp_path: Path
) -> None:
    pca, result = found
    cands = result.candidates
    assert sorted((c.index, c.sign) for c in cands) == [(i, s) for i in range(4) for s in (-1, 1)]
    keys = [(c.inert, -c.score) for c in cands]
    assert keys == sorted(keys)
    for c in cands:
        if c.suggested_coeff is not None:
            assert c.ppl_ratio is not None and c.ppl_ratio <= SETTINGS.damage_budget
            assert SETTINGS.coeff_min <= c.suggested_coeff <= SETTINGS.coeff_max
        assert len(c.completions) == SETTINGS.n_completion_prompts
        assert c.label.startswith(f"{c.name}: ")
    assert result.controls["n"] == 2 and len(result.controls["effect"]) == 2
    result.save(tmp_path)
    data = json.loads((tmp_path / "discover.json").read_text())
    assert (data["layer"], data["method"], data["k"], data["rank_by"]) == (
        LAYER,
        "pca",
        4,
        "between",
    )
    assert data["input_hygiene"]["scale"] == "standardize"
    assert "hidden_states[1]" in data["layer_convention"]
    for c in data["candidates"]:
        vec = SteeringVector.load(c["vector_path"])
        direction = c["sign"] * torch.from_numpy(pca.directions_[c["index"]])
        assert torch.allclose(vec.directions[LAYER], direction)
        assert vec.info["discover"]["suggested_coeff"] == c["suggested_coeff"]
        assert vec.info["label"] == c["label"] and vec.layer_norms[LAYER] > 0


def test_batched_trials_equal_one_plan_per_candidate(
    tiny_model: Model, found: tuple[dictionaries.Dictionary, Discovery]
) -> None:
    _, result = found
    prompts = load_corpus(SETTINGS.prompts, limit=SETTINGS.n_prompts)
    held_out = load_corpus(SETTINGS.damage_texts)[-SETTINGS.n_damage :]
    clean = steered_logits(tiny_model, prompts)
    clean_ppl = sequence_perplexity(*steered_logits(tiny_model, held_out, max_tokens=16))
    checked = [c for c in result.candidates if c.suggested_coeff is not None][:2]
    assert checked
    for c in checked:
        assert c.suggested_coeff is not None
        plan = SteeringPlan.of(c.vector, c.suggested_coeff, units="norm")
        steered = steered_logits(tiny_model, prompts, plan)
        last = clean.mask.sum(1) - 1
        kl = next_token_kl(steered.logits, clean.logits, position=last)
        assert c.effect == pytest.approx(float(kl.mean()), rel=1e-4, abs=1e-7)
        ppl = sequence_perplexity(*steered_logits(tiny_model, held_out, plan, max_tokens=16))
        ratio = float(torch.exp((ppl.log() - clean_ppl.log()).mean()))
        assert c.ppl_ratio == pytest.approx(ratio, rel=1e-4)


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


def test_discover_refuses_bad_settings_and_another_models_store(
    tiny_gpt2: Model,
    planted: tuple[Path, np.ndarray],
    found: tuple[dictionaries.Dictionary, Discovery],
) -> None:
    pca, _ = found
    store = ActivationStore.open(planted[0])
    with pytest.raises(WorkbenchError) as e:
        discover(tiny_gpt2, pca, store, settings=SETTINGS)
    assert tiny_gpt2.name in str(e.value) and str(store.manifest["model"]) in str(e.value)
    with pytest.raises(WorkbenchError, match="damage budget"):
        TrialSettings(damage_budget=1.0)
    with pytest.raises(WorkbenchError, match="unknown ranking"):
        discover(tiny_gpt2, pca, store, settings=SETTINGS, rank_by="vibes")


@pytest.mark.real_model
def test_register_is_discovered_and_steers_on_the_real_model(
    default_model: Model, tmp_path: Path
) -> None:
    """Formal vs casual sentences, mixed and unlabelled: a top-3 candidate separates the hidden
    register at document AUROC >= 0.85, every suggested coefficient stays within the damage
    budget, and at its suggested coefficient the formal-pointing candidate moves sampled text
    toward formal (along the labelled mean difference) more than a norm-matched random vector."""
    formal, casual = load_corpus("builtin:formal"), load_corpus("builtin:casual")
    docs = [(t, 1) for t in formal] + [(t, 0) for t in casual]
    random.Random(0).shuffle(docs)
    capture(
        default_model,
        [t for t, _ in docs],
        [4],
        site="resid_pre",
        max_tokens=64,
        out=tmp_path / "acts",
        progress_bar=False,
    )
    store = ActivationStore.open(tmp_path / "acts")
    ica = fit_from_store(make_dictionary("ica", 8), store, 4)
    settings = TrialSettings(n_random=2, n_completion_prompts=2, max_new_tokens=8)
    result = discover(default_model, ica, store, settings=settings)
    codes = component_codes(ica, store, 4, range(8))
    ok = np.isfinite(codes).all(axis=1)
    ids, means = doc_mean_codes(codes[ok], store.rows_meta().doc.numpy()[ok])
    y = np.array([label for _, label in docs])[ids]
    formality = {c.name: roc_auc_score(y, c.sign * means[:, c.index]) for c in result.candidates}
    best = max(result.candidates[:3], key=lambda c: abs(formality[c.name] - 0.5))
    assert max(formality[best.name], 1 - formality[best.name]) >= 0.85
    for c in result.candidates:
        assert c.ppl_ratio is None or c.ppl_ratio <= settings.damage_budget
    to_formal = next(
        c for c in result.candidates if c.index == best.index and formality[c.name] > 0.5
    )
    assert to_formal.suggested_coeff is not None
    site = Site("resid_pre", 4)
    labelled = collect(default_model, formal + casual, [site], positions="mean").rows[site]
    is_formal = torch.arange(len(labelled)) < len(formal)
    axis = labelled[is_formal].mean(0) - labelled[~is_formal].mean(0)  # (d_model,)
    prompts = load_corpus("builtin:neutral_prompts", limit=8)

    coeff = to_formal.suggested_coeff

    def formal_score(vector: SteeringVector) -> float:
        plan = SteeringPlan.of(vector, coeff, units="norm")
        texts = [
            p + t
            for p in prompts
            for t in generate(default_model, p, plan, n=2, sampling=actadd_sampling(24)).texts
        ]
        rows = collect(default_model, texts, [site], positions="mean").rows[site]
        return float((rows @ axis / axis.norm()).mean())

    steered = formal_score(to_formal.vector)
    control = formal_score(random_like(to_formal.vector, seed=1))
    assert steered > control
