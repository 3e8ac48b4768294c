from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from workbench.activations.batches import doc_records
from workbench.activations.capture import CaptureProgress, capture
from workbench.activations.store import ActivationStore
from workbench.errors import WorkbenchError
from workbench.model.hooks import Site
from workbench.model.load import Model

DOCS = [
    "Hello world, I love you",
    "The fox",
    "Numbers 0 1 2 3 and the quick brown fox jumps over the lazy dog.",
    "Weddings, brides and grooms walk down the aisle; the ceremony ends with vows.",
    "Rain",
    "Yesterday my neighbour said that the weather today is cold.",
    "Music and law, science and cooking.",
]
TIMING_KEYS = {"created", "updated", "elapsed_s", "tokens_per_s"}


def _reference(model: Model, text: str, site: Site) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(pos,)`` and activations ``(pos, width)`` from a plain full run_with_cache."""
    ids, _, _ = model.encode([text])
    with torch.inference_mode():
        _, cache = model.tl.run_with_cache(ids)
    return ids[0], cache[site.tl_name][0].flatten(1)


@pytest.mark.parametrize("positions", ["all", "last", "mean"])
@pytest.mark.parametrize("kind", ["resid_post", "z"])
@pytest.mark.parametrize("backend", ["auto", "tl"])
def test_capture_equals_full_run_with_cache(
    tiny_model: Model, tmp_path: Path, positions: str, kind: str, backend: str
) -> None:
    res = capture(
        tiny_model,
        DOCS,
        [3, 1],
        site=kind,
        positions=positions,
        dtype="float32",
        out=tmp_path / "s",
        shard_rows=5,
        progress_bar=False,
        backend=backend,
    )
    store = ActivationStore.open(res.path)
    assert store.layers == [1, 3]
    meta = store.rows_meta()
    n_real = [len(_reference(tiny_model, d, Site("resid_post", 0))[0]) - 1 for d in DOCS]
    if positions == "all":
        assert store.n_rows == sum(n_real)
        assert torch.bincount(meta.doc, minlength=len(DOCS)).tolist() == n_real
    else:
        assert sorted(meta.doc.tolist()) == list(range(len(DOCS)))
    assert res.tokens == sum(n_real)
    for layer in (1, 3):
        rows = store.load(layer)
        assert rows.shape == (store.n_rows, 64)
        refs = [_reference(tiny_model, d, Site(kind, layer)) for d in DOCS]
        for r in range(store.n_rows):
            ids, ref = refs[int(meta.doc[r])]
            pos = int(meta.pos[r])
            if positions == "mean":
                assert pos == -1 and int(meta.token[r]) == -1
                expected = ref[1:].mean(0)
            else:
                assert pos >= 1  # BOS never stored
                assert int(meta.token[r]) == int(ids[pos])
                if positions == "last":
                    assert pos == len(ids) - 1
                expected = ref[pos]
            torch.testing.assert_close(rows[r], expected, atol=1e-5, rtol=1e-5)


def test_rows_come_in_shards_no_larger_than_the_limit(tiny_model: Model, tmp_path: Path) -> None:
    res = capture(tiny_model, DOCS * 3, [2], out=tmp_path / "s", shard_rows=7, progress_bar=False)
    manifest = ActivationStore.open(res.path).manifest
    sizes = [s["rows"] for s in manifest["shards"]]
    assert len(sizes) == -(-res.rows // 7)
    assert all(n == 7 for n in sizes[:-1]) and 1 <= sizes[-1] <= 7
    for s in manifest["shards"]:
        tensors = load_file(str(res.path / s["file"]))
        assert {k: tuple(v.shape) for k, v in tensors.items()} == {
            "layer_2": (s["rows"], 64),
            "doc": (s["rows"],),
            "pos": (s["rows"],),
            "token": (s["rows"],),
        }


def test_float16_store_matches_float32(tiny_model: Model, tmp_path: Path) -> None:
    s16 = ActivationStore.open(
        capture(tiny_model, DOCS, [2], out=tmp_path / "a", progress_bar=False).path
    )
    s32 = ActivationStore.open(
        capture(tiny_model, DOCS, [2], dtype="float32", out=tmp_path / "b", progress_bar=False).path
    )
    assert s16.dtype == torch.float16 and s32.dtype == torch.float32
    assert s16.load(2, dtype=torch.float16).dtype == torch.float16
    x16, x32 = s16.load(2), s32.load(2)
    assert not torch.equal(x16, x32)  # really rounded
    torch.testing.assert_close(x16, x32, atol=2e-3, rtol=1e-3)
    # Norms are taken before the cast to float16.
    assert s16.mean_norm(2) == pytest.approx(s32.mean_norm(2), rel=1e-6)
    assert (res_bytes := (s16.path / "shard-00000.safetensors").stat().st_size) < (
        s32.path / "shard-00000.safetensors"
    ).stat().st_size
    assert res_bytes > 0


def test_mean_norm_is_the_residual_norm_over_all_tokens(tiny_model: Model, tmp_path: Path) -> None:
    full = ActivationStore.open(
        capture(
            tiny_model,
            DOCS,
            [1],
            site="resid_post",
            dtype="float32",
            out=tmp_path / "a",
            progress_bar=False,
        ).path
    )
    expected = full.load(1).norm(dim=-1).mean().item()
    assert full.mean_norm(1) == pytest.approx(expected, rel=1e-6)
    assert full.row_norm(1) == pytest.approx(expected, rel=1e-6)
    last = ActivationStore.open(
        capture(
            tiny_model,
            DOCS,
            [1],
            site="resid_post",
            positions="last",
            dtype="float32",
            out=tmp_path / "b",
            progress_bar=False,
        ).path
    )
    assert last.mean_norm(1) == pytest.approx(expected, rel=1e-6)  # same units whatever rows
    assert last.row_norm(1) == pytest.approx(last.load(1).norm(dim=-1).mean().item(), rel=1e-6)
    z = ActivationStore.open(
        capture(tiny_model, DOCS, [1], site="z", out=tmp_path / "c", progress_bar=False).path
    )
    assert z.manifest["norm_site"] == "resid_post"
    assert z.mean_norm(1) == pytest.approx(expected, rel=1e-6)
    assert z.row_norm(1) != pytest.approx(expected, rel=1e-2)


def _interrupt_after_first_shard(p: CaptureProgress) -> None:
    if p.shards >= 1:
        raise KeyboardInterrupt


def test_resume_after_interruption_gives_the_same_store(tiny_model: Model, tmp_path: Path) -> None:
    docs = DOCS * 4
    kwargs: dict[str, Any] = {"shard_rows": 9, "batch_size": 3, "progress_bar": False}
    clean = capture(tiny_model, docs, [1, 3], out=tmp_path / "clean", **kwargs)
    with pytest.raises(KeyboardInterrupt):
        capture(
            tiny_model,
            docs,
            [1, 3],
            out=tmp_path / "cut",
            progress=_interrupt_after_first_shard,
            **kwargs,
        )
    with pytest.raises(WorkbenchError, match="incomplete.*--resume"):
        ActivationStore.open(tmp_path / "cut")
    partial = ActivationStore.open(tmp_path / "cut", allow_incomplete=True)
    assert 9 <= partial.n_rows < clean.rows
    clean_store = ActivationStore.open(clean.path)
    assert torch.equal(partial.load(3), clean_store.load(3)[: partial.n_rows])
    with pytest.raises(WorkbenchError, match="--resume"):  # refuses without --resume
        capture(tiny_model, docs, [1, 3], out=tmp_path / "cut", **kwargs)

    leftover = tmp_path / "cut" / ".shard-00001.safetensors.x.tmp"  # as left by a killed run
    leftover.mkdir()
    resumed = capture(tiny_model, docs, [1, 3], out=tmp_path / "cut", resume=True, **kwargs)
    assert not leftover.exists()
    assert resumed.resumed and resumed.rows == clean.rows and resumed.tokens == clean.tokens
    a = json.loads((clean.path / "manifest.json").read_text())
    b = json.loads((resumed.path / "manifest.json").read_text())
    assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {
        k: v for k, v in b.items() if k not in TIMING_KEYS
    }
    for s in a["shards"]:
        ta, tb = load_file(str(clean.path / s["file"])), load_file(str(resumed.path / s["file"]))
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (clean.path / "docs.jsonl").read_bytes() == (resumed.path / "docs.jsonl").read_bytes()


def test_resume_is_a_noop_on_a_complete_store(tiny_model: Model, tmp_path: Path) -> None:
    first = capture(tiny_model, DOCS, [1], out=tmp_path / "s", progress_bar=False)
    before = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    again = capture(tiny_model, DOCS, [1], out=tmp_path / "s", resume=True, progress_bar=False)
    assert again.already_complete and again.rows == first.rows
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == before


def test_resume_with_other_settings_is_refused(tiny_model: Model, tmp_path: Path) -> None:
    capture(tiny_model, DOCS, [1], out=tmp_path / "s", progress_bar=False)
    with pytest.raises(WorkbenchError, match="positions='all'.*--overwrite"):
        capture(tiny_model, DOCS, [1], positions="last", out=tmp_path / "s", resume=True)
    with pytest.raises(WorkbenchError, match="corpus_sha256"):
        capture(tiny_model, DOCS[:3], [1], out=tmp_path / "s", resume=True)


def test_existing_store_is_never_silently_overwritten(tiny_model: Model, tmp_path: Path) -> None:
    out = tmp_path / "s"
    capture(tiny_model, DOCS, [1], out=out, progress_bar=False)
    shard = (out / "shard-00000.safetensors").read_bytes()
    with pytest.raises(WorkbenchError, match="complete activation store.*--overwrite"):
        capture(tiny_model, DOCS[:2], [1], out=out, progress_bar=False)
    assert (out / "shard-00000.safetensors").read_bytes() == shard
    res = capture(tiny_model, DOCS[:2], [2], out=out, overwrite=True, progress_bar=False)
    assert ActivationStore.open(out).layers == [2] and res.docs == 2
    with pytest.raises(WorkbenchError, match="not both"):
        capture(tiny_model, DOCS, [1], out=out, overwrite=True, resume=True)
    (out / "manifest.json").write_text('{"format": ')  # a damaged store is still replaceable
    capture(tiny_model, DOCS[:3], [1], out=out, overwrite=True, progress_bar=False)
    assert ActivationStore.open(out).manifest["n_docs"] == 3
    assert sorted(p.name for p in out.iterdir()) == [
        ".workbench",
        "docs.jsonl",
        "manifest.json",
        "shard-00000.safetensors",
    ]


def test_a_foreign_folder_is_not_touched(tiny_model: Model, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="folder this workbench did not make"):
        capture(tiny_model, DOCS, [1], out=tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": [4]}, r"layer 4 is out of range .* 0\.\.3"),
        ({"layers": []}, "at least one layer"),
        ({"corpus": ["", "  "]}, "no documents"),
        ({"corpus": "missing-file.txt"}, "does not exist"),
        ({"positions": "first"}, "unknown positions"),
        ({"site": "resid"}, "unknown site"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"max_tokens": 1}, "at least 2"),
        ({"batch_size": 0}, "at least 1"),
    ],
)
def test_bad_input_fails_before_writing(
    tiny_model: Model, tmp_path: Path, kwargs: dict, message: str
) -> None:
    args = {"corpus": DOCS, "layers": [1], **kwargs}
    corpus, layers = args.pop("corpus"), args.pop("layers")
    with pytest.raises(WorkbenchError, match=message):
        capture(tiny_model, corpus, layers, out=tmp_path / "s", **args)
    assert not (tmp_path / "s").exists()


def test_long_documents_are_truncated_and_recorded(tiny_model: Model, tmp_path: Path) -> None:
    res = capture(
        tiny_model,
        DOCS,
        [1],
        site="resid_post",
        max_tokens=5,
        dtype="float32",
        out=tmp_path / "s",
        progress_bar=False,
    )
    store = ActivationStore.open(res.path)
    lengths = [len(tiny_model.encode([d])[0][0]) for d in DOCS]
    assert res.truncated == sum(n > 5 for n in lengths) > 0
    trunc = store.manifest["truncation"]
    assert trunc["limit"] == 5 and trunc["docs"] == [i for i, n in enumerate(lengths) if n > 5]
    assert store.n_rows == sum(min(n, 5) - 1 for n in lengths)
    meta = store.rows_meta()
    assert int(meta.pos.max()) == 4
    row = int(torch.nonzero(meta.doc == trunc["docs"][0])[-1])
    _, ref = _reference(tiny_model, DOCS[trunc["docs"][0]], Site("resid_post", 1))
    torch.testing.assert_close(store.load(1)[row], ref[4], atol=1e-5, rtol=1e-5)


def test_progress_callback_and_hooks_removed(tiny_model: Model, tmp_path: Path) -> None:
    seen: list[CaptureProgress] = []
    capture(tiny_model, DOCS, [1], out=tmp_path / "a", batch_size=2, progress=seen.append)
    assert len(seen) == 4
    assert [p.docs_done for p in seen] == [2, 4, 6, 7]
    assert seen[-1].tokens_done == seen[-1].tokens_total == seen[-1].tokens_run > 0
    assert all(a.tokens_done < b.tokens_done for a, b in zip(seen, seen[1:], strict=False))
    with pytest.raises(KeyboardInterrupt):
        capture(
            tiny_model,
            DOCS,
            [1],
            out=tmp_path / "b",
            shard_rows=3,
            progress=_interrupt_after_first_shard,
        )
    assert tiny_model.hf is not None
    hooked = [
        m
        for m in [*tiny_model.tl.modules(), *tiny_model.hf.modules()]
        if m._forward_hooks or m._forward_pre_hooks
    ]
    assert hooked == []


def test_resid_mid_capture_on_transformers_matches_transformer_lens(
    tiny_model: Model, tmp_path: Path
) -> None:
    res = capture(
        tiny_model,
        DOCS[:2],
        [2],
        site="resid_mid",
        dtype="float32",
        out=tmp_path / "s",
        progress_bar=False,
    )
    store = ActivationStore.open(res.path)
    assert store.manifest["backend"] == "hf"  # one copy of the weights: no TL model needed
    _, ref = _reference(tiny_model, DOCS[0], Site("resid_mid", 2))  # run_with_cache on TL
    meta = store.rows_meta()
    rows = store.load(2)[meta.doc == 0]
    torch.testing.assert_close(rows, ref[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.real_model
def test_default_model_capture_at_layer_8(default_model: Model, tmp_path: Path) -> None:
    sentences = ["The cat sat on the mat.", "I love you.", "Paris is the capital of France."]
    res = capture(default_model, sentences, [8], out=tmp_path / "s", progress_bar=False)
    store = ActivationStore.open(res.path)
    x = store.load(8)
    assert x.shape == (res.tokens, 576) and res.d_model == 576
    assert 15 <= res.tokens <= 30
    assert torch.isfinite(x).all()
    assert 0 < store.mean_norm(8) < 1e4 and 0 < store.row_norm(8) < 1e4
    left, token, right = store.context(0, window=3)
    assert token and token in "".join(sentences)


class _SlowTokenizer:
    """A tokenizer without character offsets: one token per word."""

    is_fast = False

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [len(w) for w in text.split(" ")]}

    def decode(self, ids: list[int]) -> str:
        return "x" * ids[0] + " "


def test_doc_records_without_offsets_use_decoded_pieces() -> None:
    model: Any = SimpleNamespace(tokenizer=_SlowTokenizer())  # all doc_records reads of a Model
    (record,) = doc_records(model, ["ab cde f"], first=1)
    assert record["text"] == "xx xxx x "
    assert record["offsets"] == [[0, 3], [3, 7], [7, 9]]
    assert record["n_tokens"] == 4
