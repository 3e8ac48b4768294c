from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dictionaries
from dictionaries import DictionaryInfo
from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.corpora import load_corpus
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.hygiene import Hygiene
from workbench.decompose.inspect import (
    activation_histogram,
    atom_cosines,
    check_store,
    component_codes,
    cosine_report,
    inspect_components,
    logit_lens,
    top_contexts,
)
from workbench.decompose.maps import activation_map, atom_map
from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.vectors.vector import SteeringVector

LAYER = 2
DOCS = load_corpus("builtin:wedding", limit=12) + load_corpus("builtin:sports", limit=12)


@pytest.fixture(scope="module")
def store(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    out = tmp_path_factory.mktemp("inspect") / "acts"
    capture(
        tiny_model,
        DOCS,
        [LAYER],
        site="resid_pre",
        max_tokens=24,
        dtype="float32",
        out=out,
        shard_rows=64,
        progress_bar=False,
    )
    return ActivationStore.open(out)


@pytest.fixture(scope="module")
def pca(store: ActivationStore) -> dictionaries.PCA:
    fitted = fit_from_store(make_dictionary("pca", 6), store, LAYER)
    assert isinstance(fitted, dictionaries.PCA)
    return fitted


def test_top_contexts_put_the_highest_row_first_and_mark_its_token(
    tiny_model: Model, store: ActivationStore, pca: dictionaries.PCA
) -> None:
    codes = component_codes(pca, store, LAYER, [0, 3])  # (n_rows, 2)
    assert codes.shape == (store.n_rows, 2)
    direct = pca.encode(store.load(LAYER))[:, 3]
    np.testing.assert_allclose(codes[:, 1], direct, rtol=1e-5, atol=1e-5)
    top = top_contexts(store, codes[:, 1], 5, window=4)
    assert top[0].row == int(np.argmax(codes[:, 1]))
    assert [c.activation for c in top] == sorted((c.activation for c in top), reverse=True)
    token_id = int(store.rows_meta().token[top[0].row])
    assert top[0].token == tiny_model.tokenizer.decode([token_id])
    assert f"[[{top[0].token}]]" in top[0].marked
    assert top[0].marked.replace("[[", "").replace("]]", "") in DOCS[top[0].doc]
    bottom = top_contexts(store, codes[:, 1], 3, largest=False)
    assert bottom[0].row == int(np.argmin(codes[:, 1]))
    assert bottom[0].activation == pytest.approx(float(codes[:, 1].min()))


def test_nan_codes_are_skipped(store: ActivationStore) -> None:
    codes = np.full(store.n_rows, np.nan)
    codes[7] = -1.0
    assert [c.row for c in top_contexts(store, codes, 3)] == [7]
    with pytest.raises(WorkbenchError, match="no finite codes"):
        activation_histogram(np.full(3, np.nan))
    h = activation_histogram(codes, bins=4)
    assert h.n == 1 and sum(h.counts) == 1


def test_histogram_counts_and_edges() -> None:
    values = np.r_[np.zeros(30), np.linspace(1.0, 2.0, 10)]
    h = activation_histogram(values, bins=4)
    assert h.edges == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert h.counts == [30, 0, 5, 5] and h.n == 40
    assert h.fraction_active == pytest.approx(0.25)
    assert h.mean == pytest.approx(float(values.mean()))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_lens_of_an_unembedding_column_promotes_that_token(
    arch: str, tiny_model: Model, tiny_gpt2: Model
) -> None:
    model = tiny_model if arch == "llama" else tiny_gpt2
    W_U = model.tl.W_U.detach()  # (d_model, vocab)
    for t in (5, 77, 300):
        for mode in ("direction", "delta"):
            for rank in ("logit", "cosine"):
                lens = logit_lens(model, W_U[:, t], 3, mode=mode, rank=rank)
                assert lens.promoted[0].id == t, (mode, rank)
        lens = logit_lens(model, -W_U[:, t], 3)
        assert lens.suppressed[0].id == t
    # "direction" is the final norm applied to the direction, bias dropped, then W_U.
    d = W_U[:, 5]
    ln = model.tl.ln_final
    h = ln(d[None, None])[0, 0] - (ln.b if hasattr(ln, "b") else 0.0)
    expected = (h @ W_U).detach()
    lens = logit_lens(model, d, 4)
    assert [s.id for s in lens.promoted] == expected.topk(4).indices.tolist()
    assert lens.promoted[1].logit == pytest.approx(float(expected.topk(2).values[1]), rel=1e-4)
    assert lens.to_json()["mode"] == "direction"


def test_cosines(pca: dictionaries.PCA, store: ActivationStore) -> None:
    # An unscaled PCA's atoms are orthonormal in the model's space...
    raw = fit_from_store(make_dictionary("pca", 6), store, LAYER, hygiene=Hygiene.off())
    np.testing.assert_allclose(atom_cosines(raw), np.eye(6), atol=1e-5)
    # ...a standardized one's are orthonormal in the scaled space only: the cosines are of the
    # model-space decoder directions, which the scaling tilts.
    np.testing.assert_allclose(np.diag(atom_cosines(pca)), 1.0, atol=1e-5)
    assert np.abs(atom_cosines(pca) - np.eye(6)).max() > 1e-3
    comp = torch.from_numpy(pca.directions_[2].copy())
    vec = SteeringVector({LAYER: -3.0 * comp}, model="m", d_model=64)
    similar, named = cosine_report(pca, 2, {"same": 2.0 * comp.numpy(), "vector": vec}, top=3)
    assert named["same"] == pytest.approx(1.0, abs=1e-5)
    assert named["vector"] == pytest.approx(-1.0, abs=1e-5)
    assert len(similar) == 3 and all(s["index"] != 2 for s in similar)
    with pytest.raises(WorkbenchError, match="width"):
        cosine_report(pca, 0, {"short": np.ones(5)})


def test_inspect_components_report(
    tiny_model: Model, store: ActivationStore, pca: dictionaries.PCA
) -> None:
    reports = inspect_components(pca, store, indices=[0, 1], model=tiny_model, top_k=3, bins=8)
    assert [r.index for r in reports] == [0, 1]
    r = reports[0]
    assert len(r.top) == 3 and len(r.bottom) == 3  # PCA codes run both ways
    assert sum(r.histogram.counts) == store.n_rows
    assert r.lens is not None and len(r.lens.promoted) == 10
    assert r.explained_variance_ratio == pytest.approx(float(pca.explained_variance_ratio_[0]))
    data = json.loads(json.dumps(r.to_json()))
    assert data["top"][0]["marked"].count("[[") == 1


def test_a_store_of_another_model_is_refused(
    tiny_gpt2: Model, store: ActivationStore, pca: dictionaries.PCA
) -> None:
    other = dictionaries.PCA(n_components=2).fit(
        store.load(LAYER), info=DictionaryInfo(model=tiny_gpt2.name, site="resid_pre", layer=LAYER)
    )
    with pytest.raises(WorkbenchError) as e:
        check_store(other, store, LAYER)
    assert tiny_gpt2.name in str(e.value) and str(store.manifest["model"]) in str(e.value)
    with pytest.raises(WorkbenchError, match="layer 3 is not in the store"):
        component_codes(pca, store, 3, [0])


def test_umap_maps_write_data_and_png(
    store: ActivationStore, pca: dictionaries.PCA, tmp_path: Path
) -> None:
    topics = ["wedding"] * 12 + ["sports"] * 12
    m = activation_map(store, LAYER, colour_by="label", doc_labels=topics, n=150, n_epochs=20)
    assert m.coords.shape == (150, 2) and np.isfinite(m.coords).all()
    assert set(m.colour) == {"wedding", "sports"}
    paths = m.save(tmp_path, "acts")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "x", "y", "label", "label"] and len(rows) == 151
    data = json.loads(paths["json"].read_text())
    assert len(data["points"]) == 150 and data["points"][0]["colour"] in topics
    row = data["points"][0]["id"]
    assert data["points"][0]["colour"] == topics[int(store.rows_meta().doc[row])]

    by_code = activation_map(
        store, LAYER, colour_by="component", dictionary=pca, component=0, n=100, n_epochs=10
    )
    expected = pca.encode(store.memmap(LAYER)[by_code.ids])[:, 0]
    np.testing.assert_allclose(np.asarray(by_code.colour, float), expected, rtol=1e-5)

    atoms = atom_map(pca, colour_by="variance", n_epochs=10)
    assert atoms.coords.shape == (6, 2) and atoms.kind == "atoms"
    assert atoms.save(tmp_path, "atoms")["png"].stat().st_size > 1000
    with pytest.raises(WorkbenchError, match="doc_labels"):
        activation_map(store, LAYER, colour_by="label", doc_labels=["a"], n=10)
