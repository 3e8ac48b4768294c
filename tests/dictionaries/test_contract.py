"""Every registered dictionary backend honours the same contract (scikit-learn style)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dictionaries
from dictionaries import Dictionary, DictionaryInfo, PretrainedSAE, registry
from workbench.errors import WorkbenchError

D_MODEL = 8

# Small, fast hyperparameters per backend. A backend registered without an entry here fails
# test_every_backend_is_covered, so nothing escapes the contract.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "pca": {"n_components": 4, "whiten": True},
    "ica": {"n_components": 4, "random_state": 1},
    "dictlearn": {"n_components": 6, "alpha": 0.3, "max_iter": 2, "batch_size": 64},
    "sae": {"n_components": 12, "n_steps": 40, "batch_size": 64, "lr": 1e-3},
    "pretrained-sae": {},
}
INFO = DictionaryInfo(model="tiny-model", site="resid_post", layer=3)


def make_data(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(n, D_MODEL))  # (n, d)
    mixing = rng.normal(size=(D_MODEL, D_MODEL))  # (d, d)
    return (sources @ mixing + 3.0).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny SAEs train 10-20x slower when torch's second thread waits for a busy shared core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sae_lens_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A native SAELens folder holding a small random standard SAE."""
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    cfg = StandardSAEConfig(d_in=D_MODEL, d_sae=10)
    cfg.metadata.model_name = "tiny-model"
    cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.1, 0.1)
    folder = tmp_path_factory.mktemp("native") / "sae"
    sae.save_model(folder)
    return folder


def unfitted(name: str, folder: Path) -> Dictionary:
    """What a user holds before fit: for pretrained-sae, an SAE loaded from a folder."""
    if name == "pretrained-sae":
        return PretrainedSAE.from_folder(folder)
    return dictionaries.create(name, **FAST_PARAMS[name])


@pytest.fixture(scope="module")
def fitted(sae_lens_folder: Path) -> dict[str, Dictionary]:
    X = make_data()
    return {
        name: unfitted(name, sae_lens_folder).fit(X, info=INFO) for name in registry.available()
    }


backends = pytest.mark.parametrize("name", registry.available())


def test_every_backend_is_covered() -> None:
    assert set(registry.available()) == set(FAST_PARAMS)


@backends
def test_init_only_stores_params(name: str) -> None:
    cls = registry.get(name)
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    defaults = {k: getattr(cls(), k) for k in params}
    obj = dictionaries.create(name, **FAST_PARAMS[name])
    assert obj.get_params() == {**defaults, **FAST_PARAMS[name]}
    assert set(vars(obj)) == set(params)  # nothing learned, nothing derived
    assert not obj.is_fitted()


@backends
def test_unfitted_use_is_refused(name: str) -> None:
    obj = dictionaries.create(name, **FAST_PARAMS[name])
    hint = "from_release.*from_folder" if name == "pretrained-sae" else "call fit first"
    with pytest.raises(WorkbenchError, match=hint):
        obj.encode(make_data(5))
    with pytest.raises(WorkbenchError, match=hint):
        obj.save("never-written")
    with pytest.raises(WorkbenchError, match=hint):
        obj.decode(np.zeros((1, 4), np.float32))


@backends
def test_fit_returns_self(name: str, sae_lens_folder: Path) -> None:
    obj = unfitted(name, sae_lens_folder)
    assert obj.fit(make_data(300, seed=1)) is obj


@backends
def test_components_and_shapes(name: str, fitted: dict[str, Dictionary]) -> None:
    d = fitted[name]
    k = d.n_components_
    assert d.components_.dtype == np.float32
    assert d.components_.shape == (k, D_MODEL)
    np.testing.assert_allclose(np.linalg.norm(d.components_, axis=1), 1.0, atol=1e-5)
    X = make_data(7, seed=2)
    Z = d.encode(X)
    assert Z.shape == (7, k) and Z.dtype == np.float32
    assert d.decode(Z).shape == (7, D_MODEL)
    assert d.reconstruct(X).shape == (7, D_MODEL)
    # torch input of any float dtype is accepted
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert d.encode(torch.from_numpy(X).to(dtype)).shape == (7, k)
    assert d.info_.d_model == D_MODEL and d.info_.model == "tiny-model"


@backends
def test_save_load_round_trip_is_bit_exact(
    name: str, fitted: dict[str, Dictionary], tmp_path: Path
) -> None:
    d = fitted[name]
    d.save(tmp_path / "dict")
    assert sorted(p.name for p in (tmp_path / "dict").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]
    cfg = json.loads((tmp_path / "dict" / "config.json").read_text())
    assert cfg["method"] == name and cfg["d_model"] == D_MODEL
    assert cfg["info"]["model"] == "tiny-model" and cfg["info"]["layer"] == 3

    back = dictionaries.load(tmp_path / "dict")
    assert type(back) is type(d)
    assert back.get_params() == d.get_params()
    assert back.info_ == d.info_ and back.fit_stats_ == d.fit_stats_
    np.testing.assert_array_equal(back.components_, d.components_)
    X = make_data(50, seed=3)
    np.testing.assert_array_equal(back.encode(X), d.encode(X))
    Z = d.encode(X)
    np.testing.assert_array_equal(back.decode(Z), d.decode(Z))


@backends
def test_nonfinite_rows_are_dropped_and_counted(name: str, sae_lens_folder: Path) -> None:
    X = make_data(300, seed=4)
    X[0, 1], X[10, 2], X[20, 0] = np.nan, np.inf, -np.inf
    obj = unfitted(name, sae_lens_folder)
    with pytest.warns(UserWarning, match="dropped 3 of 300 rows"):
        obj.fit(X)
    assert obj.fit_stats_["dropped_nonfinite_rows"] == 3
    assert obj.fit_stats_["n_rows"] == 297
    with pytest.raises(WorkbenchError, match="all 4 rows"):
        unfitted(name, sae_lens_folder).fit(np.full((4, D_MODEL), np.nan))


@backends
def test_incompatible_activations_are_refused(name: str, fitted: dict[str, Dictionary]) -> None:
    d = fitted[name]
    d.check_compatible(D_MODEL, model="tiny-model", site="resid_post", layer=3)
    d.check_compatible(D_MODEL)  # unknown model/site: only the width is checked
    with pytest.raises(WorkbenchError, match=r"d_model=8.*d_model=16"):
        d.check_compatible(16, model="other-model")
    with pytest.raises(WorkbenchError, match="'tiny-model'.*'other-model'"):
        d.check_compatible(D_MODEL, model="other-model")
    with pytest.raises(WorkbenchError, match="layer 3.*layer 5"):
        d.check_compatible(D_MODEL, layer=5)
    with pytest.raises(WorkbenchError, match="16 columns.*d_model=8"):
        d.encode(np.zeros((2, 16), np.float32))


def test_registry_names_the_known_methods() -> None:
    assert {"pca", "ica", "dictlearn", "sae", "pretrained-sae"} <= set(registry.available())
    with pytest.raises(WorkbenchError, match="unknown dictionary method 'nmf'.*pca"):
        dictionaries.create("nmf")
    with pytest.raises(WorkbenchError, match="pca does not take n_componets.*n_components"):
        dictionaries.create("pca", n_componets=3)


def test_n_components_above_d_model_names_the_range() -> None:
    with pytest.raises(WorkbenchError, match="n_components=9 is out of range.*1..8"):
        dictionaries.PCA(n_components=9).fit(make_data())
    with pytest.raises(WorkbenchError, match="n_components=9 is out of range.*1..8"):
        dictionaries.ICA(n_components=9).fit(make_data())


def test_load_refuses_foreign_and_damaged_folders(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="not found"):
        dictionaries.load(tmp_path / "missing")
    d = dictionaries.PCA(n_components=2).fit(make_data())
    d.save(tmp_path / "pca")
    (tmp_path / "pca" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(WorkbenchError, match="corrupt or truncated"):
        dictionaries.load(tmp_path / "pca")
    cfg_path = tmp_path / "pca" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(WorkbenchError, match="format version 99"):
        dictionaries.load(tmp_path / "pca")


def test_info_can_be_set_after_fit(tmp_path: Path) -> None:
    d = dictionaries.PCA(n_components=2).fit(make_data())
    d.info_ = dataclasses.replace(d.info_, model="m", hook_point="blocks.1.hook_resid_pre")
    d.save(tmp_path / "pca")
    assert dictionaries.load(tmp_path / "pca").info_.hook_point == "blocks.1.hook_resid_pre"
    with pytest.raises(WorkbenchError, match="info says d_model=5"):
        dictionaries.PCA(n_components=2).fit(make_data(), info=DictionaryInfo(d_model=5))
