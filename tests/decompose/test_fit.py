from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dictionaries
from dictionaries import DictionaryInfo
from workbench.activations.capture import capture
from workbench.activations.collect import collect
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.fit import (
    evaluate_heldout,
    fit_from_store,
    heldout_docs,
    make_dictionary,
    spliced_loss,
)
from workbench.decompose.hygiene import Hygiene
from workbench.errors import WorkbenchError
from workbench.model.hooks import Site, hooks_applied
from workbench.model.load import Model

LAYER = 1


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_corpus("builtin:general", limit=48)


@pytest.fixture(scope="module")
def acts(tiny_model: Model, texts: list[str]) -> torch.Tensor:
    site = Site("resid_post", LAYER)
    return collect(tiny_model, texts[:40], [site], "all", max_tokens=48).rows[site]  # (n, 64)


@pytest.fixture(scope="module")
def store(tiny_model: Model, texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("splice") / "acts"
    capture(
        tiny_model,
        texts[:30],
        [LAYER, 2],
        site="resid_post",
        max_tokens=32,
        dtype="float32",
        out=out,
        shard_rows=100,
        progress_bar=False,
    )
    return out


def _pca(model: Model, X: torch.Tensor, k: int) -> dictionaries.PCA:
    info = DictionaryInfo(model=model.name, site="resid_post", layer=LAYER)
    return dictionaries.PCA(n_components=k).fit(X, info=info)


def test_full_rank_pca_splices_to_the_clean_loss(
    tiny_model: Model, acts: torch.Tensor, texts: list[str]
) -> None:
    held_out = texts[40:46]
    full = spliced_loss(_pca(tiny_model, acts, 64), tiny_model, held_out, mean=acts.mean(0))
    assert abs(full.loss_spliced - full.loss_clean) < 1e-4
    assert full.n_texts == 6 and full.n_tokens > 100
    assert full.layer == LAYER and full.site == "resid_post"
    # Zero- and mean-ablation really change the model, and a rank-4 PCA sits elsewhere.
    assert abs(full.loss_zero - full.loss_clean) > 1e-3
    assert full.loss_mean is not None and abs(full.loss_mean - full.loss_clean) > 1e-3
    low = spliced_loss(_pca(tiny_model, acts, 4), tiny_model, held_out)
    assert abs(low.loss_spliced - low.loss_clean) > 1e-3
    assert low.loss_clean == pytest.approx(full.loss_clean, abs=1e-9)
    assert low.loss_zero == pytest.approx(full.loss_zero, abs=1e-9)
    assert set(full.to_json()) >= {"loss_clean", "loss_spliced", "loss_zero", "recovered"}


def test_hooks_are_gone_after_measuring(
    tiny_model: Model, acts: torch.Tensor, texts: list[str]
) -> None:
    ids, _, _ = tiny_model.encode(texts[:2])
    with torch.inference_mode():
        before = tiny_model.tl(ids)
        spliced_loss(_pca(tiny_model, acts, 4), tiny_model, texts[:2])
        after = tiny_model.tl(ids)
    assert torch.equal(before, after)


def test_replacement_keeps_bos(tiny_model: Model, acts: torch.Tensor, texts: list[str]) -> None:
    seen: list[torch.Tensor] = []

    def keep(act: torch.Tensor) -> None:
        seen.append(act.detach().clone())  # (batch, pos, d_model)

    # The next block's input is the replaced output of block LAYER; listen on both backends.
    after = [(Site("resid_pre", LAYER + 1), keep)]
    mean = torch.full((tiny_model.d_model,), 0.5)
    with (
        hooks_applied(tiny_model, after, backend="tl"),
        hooks_applied(tiny_model, after, backend="hf"),
    ):
        spliced_loss(_pca(tiny_model, acts, 4), tiny_model, texts[:2], mean=mean)
    assert len(seen) == 4  # one batch for each run: clean, spliced, zero, mean
    clean, _, zero, mean_run = seen
    for run, fill in ((zero, 0.0), (mean_run, 0.5)):
        assert torch.equal(run[:, 0], clean[:, 0])
        assert torch.equal(run[:, 1:], torch.full_like(run[:, 1:], fill))
    assert float(zero[:, 1:].abs().sum()) == 0.0


def test_refuses_a_dictionary_of_another_model_or_width(
    tiny_model: Model, tiny_gpt2: Model, acts: torch.Tensor, texts: list[str]
) -> None:
    pca = _pca(tiny_model, acts, 8)
    with pytest.raises(WorkbenchError) as e:
        spliced_loss(pca, tiny_gpt2, texts[:2])
    assert tiny_model.name in str(e.value) and tiny_gpt2.name in str(e.value)
    narrow = dictionaries.PCA(n_components=4).fit(
        acts[:, :32], info=DictionaryInfo(model=tiny_model.name, site="resid_post", layer=LAYER)
    )
    with pytest.raises(WorkbenchError, match="d_model=32.*d_model=64"):
        spliced_loss(narrow, tiny_model, texts[:2])
    with pytest.raises(WorkbenchError, match="layer"):
        spliced_loss(pca, tiny_model, texts[:2], layer=2)


def test_fit_from_store_holds_documents_out(tiny_model: Model, store: Path) -> None:
    s = ActivationStore.open(store)
    docs = heldout_docs(s, 0.1)
    assert len(docs) == 3 and docs == heldout_docs(s, 0.1)  # seeded
    # Raw rows (no outlier drop, no scaling), so the exact PCA below sees the same input.
    raw = Hygiene.off()
    pca = fit_from_store(make_dictionary("pca", 8), s, LAYER, exclude_docs=docs, hygiene=raw)
    meta = s.rows_meta().doc.numpy()
    train = ~np.isin(meta, docs)
    assert pca.fit_stats_["n_rows"] == int(train.sum()) and pca.fit_stats_["solver"] == "streaming"
    exact = dictionaries.PCA(n_components=8).fit(s.load(LAYER)[torch.from_numpy(train)])
    cos = np.abs((pca.components_ * exact.components_).sum(1))
    assert cos.min() > 1 - 1e-4
    assert pca.info_.model == tiny_model.name and pca.info_.layer == LAYER
    q = evaluate_heldout(pca, s, LAYER, docs, model=tiny_model)
    assert q["heldout_rows"] == int((~train).sum()) and q["n_texts"] == 3
    assert 0 < q["fve"] < 1 and q["loss_spliced"] != q["loss_clean"]


def test_make_dictionary_errors() -> None:
    with pytest.raises(WorkbenchError, match="unknown dictionary method"):
        make_dictionary("nmf", 4)
    with pytest.raises(WorkbenchError, match="--k"):
        make_dictionary("pca", 4, {"n_components": 3})
    with pytest.raises(WorkbenchError, match="folder"):
        make_dictionary("pretrained-sae", None)
    assert make_dictionary("ica", 5, {"max_iter": 50}).get_params()["max_iter"] == 50


@pytest.mark.real_model
def test_real_model_full_rank_splice_is_clean_and_zero_ablation_hurts(
    default_model: Model,
) -> None:
    texts = load_corpus("builtin:general")
    site = Site("resid_post", 3)
    X = collect(default_model, texts[:40], [site], "all", max_tokens=32).rows[site]
    assert X.shape[0] > default_model.d_model
    info = DictionaryInfo(model=default_model.name, site="resid_post", layer=3)
    pca = dictionaries.PCA(n_components=default_model.d_model).fit(X, info=info)
    q = spliced_loss(pca, default_model, texts[-2:], max_tokens=16)
    assert abs(q.loss_spliced - q.loss_clean) < 1e-4
    assert q.loss_zero > q.loss_clean + 2.0
    assert q.recovered == pytest.approx(1.0, abs=1e-4)
