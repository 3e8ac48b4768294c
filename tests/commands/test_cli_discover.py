from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dictionaries
from dictionaries import DictionaryInfo
from workbench.activations.capture import capture
from workbench.activations.store import FORMAT, VERSION
from workbench.activations.writer import RowBatch, StoreWriter
from workbench.cli import main
from workbench.corpora import load_corpus
from workbench.model.load import Model
from workbench.testing import planted_store
from workbench.vectors.vector import SteeringVector

FAST = [
    "--n-prompts",
    "2",
    "--n-damage",
    "2",
    "--max-new-tokens",
    "3",
    "--batch-size",
    "16",
    "--n-random",
    "2",
]
DECOMPOSE_KEYS = {
    "method",
    "k",
    "fve",
    "mse",
    "l0",
    "dead",
    "loss_clean",
    "loss_spliced",
    "loss_zero",
}


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


@pytest.fixture(scope="module")
def acts(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-discover") / "acts"
    capture(
        tiny_model,
        load_corpus("builtin:general", limit=30),
        [1],
        site="resid_pre",
        max_tokens=24,
        out=out,
        progress_bar=False,
    )
    return out


def _nan_store(path: Path, model: Model, n_bad: int) -> Path:
    """A one-row-per-document store of random rows, ``n_bad`` of them NaN, written by the
    store writer (no capture can produce NaN)."""
    texts = load_corpus("builtin:general", limit=40)
    X = torch.randn(len(texts), model.d_model, generator=torch.Generator().manual_seed(0))
    X[torch.arange(n_bad) * 7] = float("nan")  # in fitted and held-out documents alike
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.name,
        "model_info": {},
        "site": "resid_pre",
        "layers": [1],
        "positions": "mean",
        "dtype": "float32",
        "width": model.d_model,
        "row_shape": [model.d_model],
        "bos": True,
        "backend": "hf",
        "batch_size": 1,
        "shard_rows": 16,
        "max_tokens": None,
        "n_docs": len(texts),
        "corpus": {"source": "test", "n_docs": len(texts)},
        "corpus_sha256": "",
        "truncation": {"limit": 128, "n_truncated": 0, "action": "", "docs": []},
    }
    docs = [
        {"doc": i, "text": t, "n_tokens": 2, "offsets": [[0, len(t)]]} for i, t in enumerate(texts)
    ]
    writer = StoreWriter.create(path, manifest, docs)
    n = len(texts)
    minus = torch.full((n,), -1, dtype=torch.long)
    writer.add(
        RowBatch(
            acts={1: X},
            doc=torch.arange(n),
            pos=minus,
            token=minus.clone(),
            row_norm=torch.ones(n, 1, dtype=torch.float64),
            resid_sum=torch.ones(n, 1, dtype=torch.float64),
            resid_count=torch.ones(n, dtype=torch.long),
        )
    )
    writer.finish()
    return path


def test_decompose_json(capsys: pytest.CaptureFixture[str], acts: Path, tmp_path: Path) -> None:
    out = tmp_path / "pca"
    res = _json(
        capsys, ["decompose", "--acts", str(acts), "--layer", "1", "--k", "8", "--out", str(out)]
    )
    assert set(res) >= DECOMPOSE_KEYS
    assert (res["method"], res["k"], res["dead"], res["l0"]) == ("pca", 8, 0, 8.0)
    assert 0 < res["fve"] < 1 and res["mse"] > 0
    assert res["loss_clean"] != res["loss_spliced"] and res["heldout_docs"] == 3
    loaded = dictionaries.load(out)
    assert loaded.n_components_ == 8 and loaded.info_.layer == 1
    assert res["input_hygiene"]["scale"] == "standardize" and loaded.scaler_ is not None
    raw = _json(
        capsys,
        [
            "decompose",
            "--acts",
            str(acts),
            "--layer",
            "1",
            "--k",
            "8",
            "--max-norm-ratio",
            "0",
            "--scale",
            "none",
            "--out",
            str(tmp_path / "raw"),
        ],
    )
    assert raw["input_hygiene"]["max_norm_ratio"] is None
    assert raw["input_hygiene"]["dropped_norm"] == 0
    assert dictionaries.load(tmp_path / "raw").scaler_ is None
    assert json.loads((out / "quality.json").read_text())["fve"] == res["fve"]
    # Backend hyperparameters go through --param; a human-readable summary without --json.
    assert (
        main(
            [
                "decompose",
                "--acts",
                str(acts),
                "--layer",
                "1",
                "--method",
                "ica",
                "--k",
                "4",
                "--param",
                "max_iter=300",
                "--out",
                str(tmp_path / "ica"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "ica with k=4" in text and "spliced" in text
    assert dictionaries.load(tmp_path / "ica").get_params()["max_iter"] == 300


def test_decompose_errors(
    capsys: pytest.CaptureFixture[str], acts: Path, tmp_path: Path, tiny_model: Model
) -> None:
    out = tmp_path / "bad"
    base = ["decompose", "--acts", str(acts), "--out", str(out)]
    assert "layer 3 is not in the store" in _error(capsys, [*base, "--layer", "3", "--k", "4"])
    assert "out of range for d_model=64" in _error(capsys, [*base, "--layer", "1", "--k", "65"])
    assert "not key=value" in _error(capsys, [*base, "--layer", "1", "--param", "alpha"])
    inside = ["decompose", "--acts", str(acts), "--layer", "1", "--out", str(acts.parent)]
    assert "lies inside --out" in _error(capsys, [*inside, "--overwrite"])
    assert (acts / "manifest.json").is_file()
    assert not out.exists()
    _json(capsys, [*base, "--layer", "1", "--k", "2"])
    assert "already exists" in _error(capsys, [*base, "--layer", "1", "--k", "2"])


def test_decompose_counts_nonfinite_rows(
    capsys: pytest.CaptureFixture[str], tiny_model: Model, tmp_path: Path
) -> None:
    store = _nan_store(tmp_path / "nan", tiny_model, n_bad=5)
    res = _json(
        capsys,
        [
            "decompose",
            "--acts",
            str(store),
            "--layer",
            "1",
            "--k",
            "4",
            "--out",
            str(tmp_path / "d"),
        ],
    )
    dropped = res["dropped_nonfinite_rows"]
    assert dropped["fit"] + dropped["heldout"] == 5 and dropped["fit"] >= 1
    assert res["n_fit_rows"] + res["heldout_rows"] - dropped["heldout"] == 40 - dropped["fit"]
    assert any("NaN or inf" in n for n in res["notes"])
    assert np.isfinite(res["fve"]) and np.isfinite(res["loss_spliced"])


def test_discover_json_with_a_store(
    capsys: pytest.CaptureFixture[str], acts: Path, tmp_path: Path, tiny_model: Model
) -> None:
    out = tmp_path / "found"
    res = _json(
        capsys,
        ["discover", "--acts", str(acts), "--layer", "1", "--k", "3", "--out", str(out), *FAST],
    )
    assert (res["layer"], res["method"], res["k"], res["model"]) == (1, "ica", 3, tiny_model.name)
    cands = res["candidates"]
    keys = [(c["inert"], -c["score"]) for c in cands]
    assert len(cands) == 6 and keys == sorted(keys)
    for c in cands:
        assert {
            "index",
            "sign",
            "label",
            "top_tokens",
            "effect",
            "effect_vs_random",
            "suggested_coeff",
            "ppl_ratio",
            "inert",
            "score",
            "vector_path",
            "completions",
            "contrastive_words",
            "between_doc_share",
        } <= set(c)
        assert SteeringVector.load(c["vector_path"]).info["index"] == c["index"]
    assert res["input_hygiene"]["max_norm_ratio"] == 3.0 and res["rank_by"] == "combined"
    assert dictionaries.load(out / "dictionary").n_components_ == 3
    assert json.loads((out / "discover.json").read_text())["candidates"] == cands
    assert "already exists" in _error(
        capsys, ["discover", "--acts", str(acts), "--layer", "1", "--out", str(out)]
    )


def test_discover_captures_a_corpus(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(load_corpus("builtin:cooking", limit=12)) + "\n")
    out = tmp_path / "run"
    res = _json(
        capsys,
        [
            "discover",
            "--model",
            str(tiny_model_dir),
            "--corpus",
            str(corpus),
            "--layer",
            "2",
            "--k",
            "2",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert len(res["candidates"]) == 4 and res["site"] == "resid_pre"
    assert res["store"] == str(out / "acts") and (out / "acts" / "manifest.json").is_file()
    assert sorted(p.name for p in (out / "candidates").iterdir()) == [
        "c000neg.safetensors",
        "c000pos.safetensors",
        "c001neg.safetensors",
        "c001pos.safetensors",
    ]


def test_discover_errors(
    capsys: pytest.CaptureFixture[str],
    acts: Path,
    tmp_path: Path,
    tiny_gpt2_dir: Path,
    tiny_model: Model,
) -> None:
    out = tmp_path / "x"
    base = ["discover", "--layer", "1", "--out", str(out)]
    assert "exactly one of --corpus" in _error(capsys, base)
    err = _error(capsys, [*base, "--acts", str(acts), "--model", str(tiny_gpt2_dir)])
    assert str(tiny_gpt2_dir) in err and tiny_model.name in err
    narrow = dictionaries.PCA(n_components=2).fit(
        np.random.default_rng(0).normal(size=(50, 32)),
        info=DictionaryInfo(model=tiny_model.name, site="resid_pre", layer=1),
    )
    narrow.save(tmp_path / "narrow")
    err = _error(capsys, [*base, "--acts", str(acts), "--dictionary", str(tmp_path / "narrow")])
    assert "d_model=32" in err and "d_model=64" in err
    assert "out of range" in _error(capsys, [*base, "--acts", str(acts), "--k", "100"])
    assert "damage budget" in _error(capsys, [*base, "--acts", str(acts), "--damage-budget", "1"])
    assert "30 documents but --k asks for 40" in _error(
        capsys, [*base, "--acts", str(acts), "--k", "40"]
    )
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    assert "one label only" in _error(capsys, [*base, "--acts", str(acts), "--concepts", str(one)])
    no_docs = tmp_path / "no-docs"
    planted_store(no_docs, tiny_model, layer=1, n_docs=8)
    (no_docs / "docs.jsonl").unlink()  # a store that cannot say which document a row is from
    assert "no docs.jsonl" in _error(capsys, [*base, "--acts", str(no_docs), "--k", "2"])
    assert not out.exists()


def test_discover_contrast_and_concepts(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    wedding = load_corpus("builtin:wedding", limit=10)
    sports = load_corpus("builtin:sports", limit=10)
    (tmp_path / "a.txt").write_text("\n".join(wedding) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(sports) + "\n")
    concepts = tmp_path / "concepts.jsonl"
    concepts.write_text(
        "".join(json.dumps({"text": t, "label": "wedding"}) + "\n" for t in wedding[:5])
        + "".join(json.dumps({"text": t, "label": "sports"}) + "\n" for t in sports[:5])
    )
    out = tmp_path / "contrast"
    argv = ["discover", "--model", str(tiny_model_dir), "--corpus", str(tmp_path / "a.txt")]
    res = _json(
        capsys,
        [
            *argv,
            "--contrast",
            str(tmp_path / "b.txt"),
            "--concepts",
            str(concepts),
            "--layer",
            "1",
            "--k",
            "3",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert res["rank_by"] == "contrast" and res["contrast"]["contrast"] == str(tmp_path / "b.txt")
    cands = res["candidates"]
    for c in cands:
        assert 0.0 <= c["contrast_auroc"] <= 1.0
        assert c["concept"]["label"] in ("wedding", "sports")
        assert -1.0 <= c["concept"]["cosine"] <= 1.0
    # The two signs of a component separate the corpora in opposite directions.
    by = {(c["index"], c["sign"]): c["contrast_auroc"] for c in cands}
    assert all(by[(i, 1)] == pytest.approx(1 - by[(i, -1)]) for i in range(3))
    best = res["concepts"]["best"]
    assert {b["label"] for b in best} == {"wedding", "sports"}
    assert all(1 <= b["rank"] <= 6 for b in best)
    err = _error(
        capsys, [*argv, "--rank-by", "contrast", "--layer", "1", "--out", str(tmp_path / "y")]
    )
    assert "--contrast" in err
