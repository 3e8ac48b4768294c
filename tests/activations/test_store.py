from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.errors import WorkbenchError
from workbench.model.load import Model

DOCS = [
    "Hello world, I love you",
    "The fox",
    "Numbers 0 1 2 3 and the quick brown fox jumps over the lazy dog.",
    "Weddings, brides and grooms walk down the aisle; the ceremony ends with vows.",
    "Rain",
    "Yesterday my neighbour said that the weather today is cold.",
]


@pytest.fixture(scope="module")
def store_dir(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s"
    capture(tiny_model, DOCS, [1, 2], dtype="float32", out=out, shard_rows=7, progress_bar=False)
    return out


@pytest.fixture
def store(store_dir: Path) -> ActivationStore:
    return ActivationStore.open(store_dir)


def test_description(store: ActivationStore, tiny_model: Model) -> None:
    assert store.layers == [1, 2] and store.d_model == 64 and store.row_shape == (64,)
    assert store.site == "resid_pre" and store.positions == "all"  # the default site
    assert store.manifest["model_info"] == tiny_model.describe()
    assert store.manifest["n_docs"] == len(DOCS) and store.manifest["complete"] is True
    assert store.n_rows == sum(s["rows"] for s in store.manifest["shards"])
    assert len(store.manifest["shards"]) == -(-store.n_rows // 7) > 3


@pytest.mark.parametrize("batch_size", [1, 5, 7, 16, 10_000])
def test_iter_batches_covers_every_row_once(store: ActivationStore, batch_size: int) -> None:
    full = store.load(2)
    batches = list(store.iter_batches(2, batch_size))
    assert all(b.shape[0] == batch_size for b in batches[:-1])
    assert 1 <= batches[-1].shape[0] <= batch_size
    assert torch.equal(torch.cat(batches), full)
    half = next(store.iter_batches(2, batch_size, dtype=torch.float16))
    assert half.dtype == torch.float16


def test_memmap_reads_the_same_rows(store: ActivationStore) -> None:
    view = store.memmap(1)
    full = store.load(1)
    assert view.shape == tuple(full.shape) and len(view) == store.n_rows
    assert all(isinstance(s, np.memmap) for s in view.shards)
    assert torch.equal(view[:], full)
    assert torch.equal(view[3], full[3])
    assert torch.equal(view[-1], full[-1])
    rows = [0, 6, 7, 8, store.n_rows - 1]  # across shard boundaries
    assert torch.equal(view[rows], full[rows])
    assert torch.equal(view[5:19:3], full[5:19:3])
    with pytest.raises(IndexError):
        view[store.n_rows]


def test_sample(store: ActivationStore) -> None:
    rows = store.sample_rows(10, seed=3)
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 10
    assert torch.equal(store.sample(1, 10, seed=3), store.load(1)[rows])
    assert not torch.equal(store.sample_rows(10, seed=4), rows)
    assert torch.equal(store.sample(1, store.n_rows, seed=0), store.load(1))
    with pytest.raises(WorkbenchError, match=f"has {store.n_rows}"):
        store.sample(1, store.n_rows + 1)


def test_rows_trace_back_to_text(store: ActivationStore, tiny_model: Model) -> None:
    meta = store.rows_meta()
    assert meta.doc.shape == meta.pos.shape == meta.token.shape == (store.n_rows,)
    for row in range(store.n_rows):
        doc, pos, token = (int(t[row]) for t in meta)
        ids = tiny_model.encode([DOCS[doc]])[0][0]
        assert int(ids[pos]) == token
        left, text, right = store.context(row, window=2)
        assert text == tiny_model.decode([token])
        assert left + text + right in DOCS[doc]
        if pos == 1:
            assert left == ""
    row = int(torch.nonzero((meta.doc == 2) & (meta.pos == 5)))
    left, text, right = store.context(row, window=100)
    assert left + text + right == DOCS[2]
    assert store.docs()[2]["text"] == DOCS[2]


def test_mean_rows_show_the_whole_document(tiny_model: Model, tmp_path: Path) -> None:
    res = capture(tiny_model, DOCS, [1], positions="mean", out=tmp_path / "s", progress_bar=False)
    store = ActivationStore.open(res.path)
    doc = int(store.rows_meta().doc[0])
    assert store.context(0) == ("", DOCS[doc], "")


def test_z_rows_reshape_per_head(tiny_model: Model, tmp_path: Path) -> None:
    res = capture(
        tiny_model, DOCS[:2], [1], site="z", dtype="float32", out=tmp_path / "s", progress_bar=False
    )
    store = ActivationStore.open(res.path)
    assert store.row_shape == (tiny_model.n_heads, tiny_model.d_head)
    heads = store.load(1).view(-1, *store.row_shape)  # (rows, n_heads, d_head)
    ids, _, _ = tiny_model.encode([DOCS[0]])
    _, cache = tiny_model.tl.run_with_cache(ids)
    z = cache["blocks.1.attn.hook_z"][0, 1:]  # (pos, n_heads, d_head)
    torch.testing.assert_close(heads[store.rows_meta().doc == 0], z, atol=1e-5, rtol=1e-5)


def test_open_errors(store: ActivationStore, tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="folder not found"):
        ActivationStore.open(tmp_path / "nowhere")
    with pytest.raises(WorkbenchError, match="no manifest.json"):
        ActivationStore.open(tmp_path)
    with pytest.raises(WorkbenchError, match="layer 3 is not in the store .* layers 1, 2"):
        store.load(3)
    with pytest.raises(WorkbenchError, match="layers 1, 2"):
        next(store.iter_batches(0))
    with pytest.raises(WorkbenchError, match="out of range"):
        store.context(store.n_rows)


def test_corrupt_or_missing_shards_are_reported(store_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(store_dir, copy)
    shard = copy / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    store = ActivationStore.open(copy)
    for read in (
        lambda: store.load(1),
        lambda: list(store.iter_batches(1)),
        lambda: store.memmap(1),
    ):
        with pytest.raises(WorkbenchError, match="shard-00001.*corrupt"):
            read()
    shard.unlink()
    with pytest.raises(WorkbenchError, match="shard-00001.*missing"):
        store.load(2)


def test_manifest_that_disagrees_with_a_shard(store_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(store_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["rows"] += 1
    manifest["n_rows"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    store = ActivationStore.open(copy)
    with pytest.raises(WorkbenchError, match="manifest"):
        store.load(1)
    with pytest.raises(WorkbenchError, match="manifest"):
        store.memmap(1)
    (copy / "manifest.json").write_text("{")
    with pytest.raises(WorkbenchError, match="not valid JSON"):
        ActivationStore.open(copy)
