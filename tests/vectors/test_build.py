from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workbench.activations.collect import TextActivations
from workbench.corpora import load_corpus
from workbench.errors import WorkbenchError
from workbench.model.hooks import Site, default_backend, hooks_applied, recording
from workbench.model.load import Model
from workbench.vectors.build import (
    from_component,
    from_datasets,
    from_probe,
    from_prompts,
    from_sae_feature,
    mean_residual_norms,
    random_like,
    rebuild,
)
from workbench.vectors.probe import fit_probe, split_texts
from workbench.vectors.prompts import space_token_id
from workbench.vectors.vector import SteeringVector

POS = ["The bride wore white", "Wedding vows were said", "The groom cried at the altar"]
NEG = ["The train was late", "Rain fell on the city", "He fixed the old bicycle today"]


def _act(model: Model, ids: list[int], layer: int, site: str = "resid_pre") -> torch.Tensor:
    """Activation of one token sequence on the TransformerLens path (the builders use hf)."""
    s = Site(site, layer)
    with torch.no_grad(), recording(model, [s], backend="tl") as rec:
        model.tl(torch.tensor([ids]))
    return rec[s][0]  # (pos, d_model)


def _tokens(model: Model, text: str) -> list[int]:
    return [model.bos_token_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]


# --------------------------------------------------------------------------- prompt pairs


def test_prompt_pair_is_padded_difference_of_recorded_activations(tiny_model: Model) -> None:
    pos, neg = "Love", "Hate you all"
    space = space_token_id(tiny_model)
    assert tiny_model.tokenizer.decode([space]) == " "
    p, n = _tokens(tiny_model, pos), _tokens(tiny_model, neg)
    assert len(p) < len(n)
    p_padded = p + [space] * (len(n) - len(p))
    v = from_prompts(tiny_model, pos, neg, layers=[2, 1])
    assert v.layers == [1, 2] and v.method == "prompt_pair" and v.aligned
    for layer in (1, 2):
        expected = _act(tiny_model, p_padded, layer) - _act(tiny_model, n, layer)
        assert v.directions[layer].shape == (len(n), tiny_model.d_model)
        assert torch.allclose(v.directions[layer], expected, atol=1e-4)
        assert v.directions[layer][0].abs().max() < 1e-5  # BOS row cancels
    # Padding with anything else gives a different last row: the space token matters.
    other = _act(tiny_model, p + [p[-1]] * (len(n) - len(p)), 2) - _act(tiny_model, n, 2)
    assert (other[-1] - v.directions[2][-1]).abs().max() > 1e-3
    assert v.info["pairs"][0]["n_pad"] == {"pos": len(n) - len(p), "neg": 0}
    assert set(v.layer_norms) == {1, 2} and all(x > 0 for x in v.layer_norms.values())


def test_several_pairs_average_front_aligned(tiny_model: Model) -> None:
    a = from_prompts(tiny_model, "Love", "Hate", 1)
    b = from_prompts(tiny_model, "I adore you", "I detest", 1)
    both = from_prompts(tiny_model, ["Love", "I adore you"], ["Hate", "I detest"], 1)
    ta, tb = a.directions[1], b.directions[1]
    width = max(len(ta), len(tb))
    expected = torch.zeros(width, tiny_model.d_model)
    expected[: len(ta)] += ta / 2
    expected[: len(tb)] += tb / 2
    assert torch.allclose(both.directions[1], expected, atol=1e-5)


def test_prompt_pair_at_resid_mid_uses_transformer_lens(tiny_model: Model) -> None:
    v = from_prompts(tiny_model, "Love", "Hate", 2, site="resid_mid")
    p, n = _tokens(tiny_model, "Love"), _tokens(tiny_model, "Hate")
    assert len(p) == len(n)
    expected = _act(tiny_model, p, 2, "resid_mid") - _act(tiny_model, n, 2, "resid_mid")
    assert torch.allclose(v.directions[2], expected, atol=1e-4)


def _n_hooks(model: Model) -> int:
    assert model.hf is not None
    mods = [*model.tl.modules(), *model.hf.modules()]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)


# --------------------------------------------------------------------------- mean difference


def test_mean_difference_matches_direct_computation(tiny_model: Model) -> None:
    layer = 2
    before = _n_hooks(tiny_model)
    for positions in ("last", "mean", "all"):
        v = from_datasets(tiny_model, POS, NEG, layer, positions=positions, batch_size=2)
        assert _n_hooks(tiny_model) == before  # the early-stop and recording hooks are gone
        rows: dict[str, list[torch.Tensor]] = {"pos": [], "neg": []}
        for key, texts in (("pos", POS), ("neg", NEG)):
            for text in texts:
                act = _act(tiny_model, _tokens(tiny_model, text), layer)[1:]  # drop BOS
                if positions == "last":
                    rows[key].append(act[-1:])
                elif positions == "mean":
                    rows[key].append(act.mean(0, keepdim=True))
                else:
                    rows[key].append(act)
        expected = torch.cat(rows["pos"]).mean(0) - torch.cat(rows["neg"]).mean(0)
        assert torch.allclose(v.directions[layer], expected, atol=1e-4), positions
        n_rows = sum(len(r) for r in rows["pos"])
        assert v.info["n_pos_rows"] == n_rows and v.info["n_pos_texts"] == 3
    assert v.recipe["pos"]["texts"] == POS


def test_mean_difference_recovers_planted_direction(
    tiny_model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    d = tiny_model.d_model
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)

    def fake_collect(
        model: Model, texts: list[str], sites: Sequence[Site], positions: str, **kw: Any
    ) -> TextActivations:
        n = len(texts)
        shift = 3.0 if texts[0].startswith("pos") else 0.0
        rows = {s: torch.from_numpy(rng.standard_normal((n, d)) + shift * u).float() for s in sites}
        return TextActivations(rows=rows, owner=torch.arange(n), n_texts=n, n_truncated=0)

    # the two text sets are collected by workbench.activations.collect.collect_contrast (the
    # package re-exports the function ``collect``, which hides the module of the same name)
    collect_module = importlib.import_module("workbench.activations.collect")
    monkeypatch.setattr(collect_module, "collect", fake_collect)
    pos = [f"pos {i}" for i in range(2000)]
    neg = [f"neg {i}" for i in range(2000)]
    v = from_datasets(tiny_model, pos, neg, 1)
    got = v.directions[1].double().numpy()
    assert got @ u / np.linalg.norm(got) > 0.99
    assert abs(np.linalg.norm(got) - 3.0) < 0.3
    assert v.info["separation"]["1"]["auroc"] > 0.98


# --------------------------------------------------------------------------- probe


def test_probe_fit_recovers_planted_direction() -> None:
    rng = np.random.default_rng(1)
    d, n = 32, 400
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    y = np.arange(n) % 2
    X = rng.standard_normal((n, d)) + np.outer(y, 6.0 * u) + 5.0  # offset: intercept matters
    tr, te = np.arange(n) < 300, np.arange(n) >= 300
    r = fit_probe(X[tr], y[tr], X[te], y[te])
    assert r.test_accuracy > 0.9 and r.mean_diff_test_accuracy > 0.9
    assert r.coef @ u / np.linalg.norm(r.coef) > 0.9
    assert r.mean_diff @ u / np.linalg.norm(r.mean_diff) > 0.9


def test_probe_beats_mean_difference_under_correlated_noise() -> None:
    # Large noise along v and a shift along u + v: the mass mean points along u + v, but the
    # best linear classifier weights u alone. The two directions must come out different.
    rng = np.random.default_rng(2)
    d, n = 8, 1000
    u, v = np.eye(d)[0], np.eye(d)[1]
    y = np.arange(n) % 2
    X = rng.standard_normal((n, d)) * 0.3 + np.outer(rng.standard_normal(n) * 5.0, v)
    X += np.outer(y, u + v)
    tr, te = np.arange(n) < 700, np.arange(n) >= 700
    r = fit_probe(X[tr], y[tr], X[te], y[te])
    assert r.coef @ u / np.linalg.norm(r.coef) > 0.95
    assert r.test_accuracy > 0.9
    assert r.mean_diff_test_accuracy < 0.8
    assert r.cosine < 0.8


def test_split_texts_is_stratified_and_seeded() -> None:
    tr, te = split_texts(8, 4, test_size=0.25, seed=3)
    assert sorted([*tr, *te]) == list(range(12))
    assert sum(i < 8 for i in te) == 2 and sum(i >= 8 for i in te) == 1
    assert np.array_equal(split_texts(8, 4, 0.25, 3)[1], te)
    assert not all(np.array_equal(split_texts(8, 4, 0.25, s)[1], te) for s in range(4, 10))
    with pytest.raises(WorkbenchError, match="at least 2 texts"):
        split_texts(1, 5)


def test_probe_vector_scaled_to_train_mean_difference(tiny_model: Model) -> None:
    pos = POS + ["Rings and flowers", "A wedding cake"]
    neg = NEG + ["A dog barked", "Stocks fell"]
    v = from_probe(tiny_model, pos, neg, 2, test_size=0.4, seed=0)
    tr, _ = split_texts(len(pos), len(neg), 0.4, 0)
    md = from_datasets(
        tiny_model, [pos[i] for i in tr if i < 5], [neg[i - 5] for i in tr if i >= 5], 2
    )
    assert v.norm(2) == pytest.approx(md.norm(2), rel=1e-4)
    info = v.info
    assert info["n_train_texts"] == len(tr) and info["n_test_texts"] == 10 - len(tr)
    assert 0.0 <= info["probe_accuracy"] <= 1.0 and 0.0 <= info["mean_diff_accuracy"] <= 1.0
    assert info["probe_train_accuracy"] == 1.0  # 6 points in 64 dimensions are separable


# --------------------------------------------------------------------------- random control


def test_random_control_matches_norms_and_is_seeded() -> None:
    rows = torch.randn(4, 16)
    rows[0] = 0.0  # an ActAdd BOS row
    v = SteeringVector({3: rows, 5: torch.randn(16) * 7}, model="m", d_model=16)
    r = random_like(v, seed=1)
    assert r.method == "random" and r.layers == [3, 5]
    assert torch.allclose(r.directions[3].norm(dim=-1), rows.norm(dim=-1), atol=1e-5)
    assert float(r.directions[3][0].abs().max()) == 0.0
    assert r.norm(5) == pytest.approx(v.norm(5), rel=1e-5)
    cos = float(r.directions[5] @ v.directions[5]) / (r.norm(5) * v.norm(5))
    assert abs(cos) < 0.9
    assert torch.equal(random_like(v, seed=1).directions[3], r.directions[3])
    assert not torch.allclose(random_like(v, seed=2).directions[3], r.directions[3])
    assert r.recipe["seed"] == 1 and r.recipe["source"]["method"] == "custom"


# --------------------------------------------------------------------------- rebuild and norms


def test_rebuild_at_another_layer_equals_fresh_build(tiny_model: Model) -> None:
    pp = from_prompts(tiny_model, "Love", "Hate", 1)
    assert torch.equal(
        rebuild(pp, tiny_model, 3).directions[3],
        from_prompts(tiny_model, "Love", "Hate", 3).directions[3],
    )
    md = from_datasets(tiny_model, POS, NEG, 1, positions="mean")
    fresh = from_datasets(tiny_model, POS, NEG, 3, positions="mean")
    again = rebuild(md, tiny_model, 3)
    assert again.layers == [3] and torch.equal(again.directions[3], fresh.directions[3])
    r = random_like(md, seed=4)
    assert torch.equal(rebuild(r, tiny_model, 3).directions[3], random_like(fresh, 4).directions[3])
    moved = SteeringVector({1: torch.ones(64)}, model=tiny_model.name, d_model=64, method="iti")
    with pytest.raises(WorkbenchError, match="cannot be rebuilt"):
        rebuild(moved, tiny_model, 2)


def test_rebuild_refuses_changed_builtin(tiny_model: Model) -> None:
    v = from_datasets(tiny_model, "builtin:wedding", NEG, 1)
    assert v.recipe["pos"]["spec"] == "builtin:wedding"
    v.recipe["pos"]["sha256"] = "0" * 16
    with pytest.raises(WorkbenchError, match="changed since"):
        rebuild(v, tiny_model, 2)


def test_mean_residual_norm_at_layer0_is_mean_embedding_norm(tiny_model: Model) -> None:
    norms = mean_residual_norms(tiny_model, [0, 2])
    assert tiny_model.hf is not None
    emb = tiny_model.hf.get_input_embeddings().weight.detach()  # (vocab, d_model)
    ids, mask, _ = tiny_model.encode(load_corpus("builtin:general", limit=32), max_tokens=64)
    keep = mask.bool()
    keep[:, 0] = False  # BOS excluded
    expected = emb[ids[keep]].norm(dim=-1).mean()
    assert norms[0] == pytest.approx(float(expected), rel=1e-4)
    assert norms[2] != norms[0]


# --------------------------------------------------------------------------- dictionaries


def _pca(tiny_model: Model, width: int, model_name: str, path: Path) -> Path:
    import dictionaries

    X = np.random.default_rng(0).standard_normal((200, width)).astype(np.float32)
    info = dictionaries.DictionaryInfo(model=model_name, site="resid_pre", layer=1)
    dictionaries.create("pca", n_components=4).fit(X, info=info).save(path)
    return path


def test_component_vector_takes_row_sign_and_metadata(tiny_model: Model, tmp_path: Path) -> None:
    import dictionaries

    folder = _pca(tiny_model, 64, tiny_model.name, tmp_path / "pca")
    comps = dictionaries.load(folder).components_
    v = from_component(folder, 2, sign=-1)
    assert v.model == tiny_model.name and v.layers == [1] and v.site == "resid_pre"
    assert torch.allclose(v.directions[1], -torch.from_numpy(comps[2]), atol=1e-7)
    assert v.recipe == {
        "dictionary": str(folder),
        "index": 2,
        "sign": -1,
        "layer": 1,
        "site": "resid_pre",
    }
    assert from_component(folder, 2, layer=3).layers == [3]
    with pytest.raises(WorkbenchError, match=r"index 4 is out of range.*0\.\.3"):
        from_component(folder, 4)
    other = _pca(tiny_model, 64, "gpt2", tmp_path / "other")
    with pytest.raises(WorkbenchError, match=f"made on gpt2 but the model is {tiny_model.name}"):
        from_component(other, 0, model=tiny_model)
    narrow = _pca(tiny_model, 32, tiny_model.name, tmp_path / "narrow")
    with pytest.raises(WorkbenchError, match="width 32"):
        from_component(narrow, 0)


def test_sae_feature_is_decoder_row(tiny_model: Model, tmp_path: Path) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    cfg = StandardSAEConfig(
        d_in=64,
        d_sae=16,
        metadata=SAEMetadata(model_name=tiny_model.name, hook_name="blocks.2.hook_resid_pre"),
    )
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_dec.normal_()
    v = from_sae_feature(sae, 5)
    assert v.layers == [2] and v.method == "sae_feature"
    assert torch.equal(v.directions[2], sae.W_dec[5].detach())
    sae.save_model(tmp_path / "sae")
    w = from_sae_feature(tmp_path / "sae", 5, model=tiny_model)
    assert torch.allclose(w.directions[2], sae.W_dec[5].detach())
    with pytest.raises(WorkbenchError, match=r"feature 16 is out of range.*0\.\.15"):
        from_sae_feature(sae, 16)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_clear_errors(tiny_model: Model) -> None:
    cases = [
        (lambda: from_prompts(tiny_model, "", "Hate", 1), "prompt is empty"),
        (lambda: from_prompts(tiny_model, ["a", "b"], ["c"], 1), "as many positive"),
        (lambda: from_prompts(tiny_model, "a", "b", 4), r"out of range.*0\.\.3"),
        (lambda: from_prompts(tiny_model, "a", "b", 1, site="z"), "from_iti"),
        (lambda: from_datasets(tiny_model, [], NEG, 1), "positive text set is empty"),
        (lambda: from_datasets(tiny_model, POS, ["  "], 1), "negative text set"),
        (lambda: from_datasets(tiny_model, POS, NEG, -1), "out of range"),
        (lambda: from_datasets(tiny_model, POS, NEG, 1, positions="first"), "unknown positions"),
        (lambda: from_probe(tiny_model, POS[:1], NEG, 1), "at least 2 texts"),
        (lambda: random_like(from_prompts(tiny_model, "a", "b", 1), seed=-1), "non-negative"),
    ]
    for fn, msg in cases:
        with pytest.raises(WorkbenchError, match=msg):
            fn()


def test_non_finite_activations_are_refused(tiny_model: Model) -> None:
    nan = [(Site("resid_pre", 1), lambda x: x * float("nan"))]
    with (
        hooks_applied(tiny_model, nan, backend=default_backend(tiny_model)),
        pytest.raises(WorkbenchError, match="non-finite activations"),
    ):
        from_datasets(tiny_model, POS, NEG, 2)


# --------------------------------------------------------------------------- real model


@pytest.mark.real_model
def test_wedding_direction_separates_held_out_texts(default_model: Model) -> None:
    pos = load_corpus("builtin:wedding", limit=40)
    neg = load_corpus("builtin:unrelated", limit=40)
    v = from_probe(default_model, pos, neg, 6, positions="last", test_size=0.3)
    assert v.info["n_test_texts"] == 24
    assert v.info["probe_accuracy"] > 0.9
    # The mass-mean direction ranks held-out texts well too (its midpoint cut is cruder).
    assert v.info["mean_diff_auroc"] > 0.85
    assert v.info["mean_diff_accuracy"] > 0.7
    assert 20 < v.layer_norms[6] < 1000
