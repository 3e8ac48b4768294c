from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workbench.cli import main
from workbench.model.load import Model
from workbench.vectors.build import from_datasets, from_prompts, random_like
from workbench.vectors.vector import SteeringVector

POS = ["The bride wore white", "Wedding vows were said", "The groom cried", "Rings and cake"]
NEG = ["The train was late", "Rain fell on the city", "He fixed the bicycle", "Stocks fell"]


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _files(tmp_path: Path) -> tuple[str, str]:
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n".join(POS) + "\n")
    neg.write_text("\n".join(NEG) + "\n")
    return str(pos), str(neg)


def test_from_prompts_round_trip_and_info(
    tiny_model: Model, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "love"
    m = str(tiny_model_dir)
    argv = ["vector", "from-prompts", "--model", m, "--layer", "1", "--layer", "2"]
    res = _json(capsys, [*argv, "--pos", "Love", "--neg", "Hate", "--out", str(out), "--json"])
    assert res["path"] == f"{out}.safetensors" and res["method"] == "prompt_pair"
    assert res["layers"] == [1, 2] and res["site"] == "resid_pre" and res["model"] == m
    saved = SteeringVector.load(res["path"])
    direct = from_prompts(tiny_model, "Love", "Hate", [1, 2])
    assert torch.equal(saved.directions[2], direct.directions[2])
    assert res["norms"]["2"] == pytest.approx(direct.norm(2), rel=1e-5)
    rel = res["norms_in_residual_units"]["2"]
    assert rel == pytest.approx(direct.norm(2) / direct.layer_norms[2], rel=1e-4)
    # --json before the sub-verb works as well.
    info = _json(capsys, ["vector", "--json", "info", res["path"]])
    assert info["recipe"] == {
        "pos": ["Love"],
        "neg": ["Hate"],
        "layers": [1, 2],
        "site": "resid_pre",
    }
    assert info["shapes"]["1"] == list(direct.directions[1].shape)
    assert main(["vector", "info", res["path"]]) == 0
    text = capsys.readouterr().out
    assert "prompt_pair vector" in text and "layer 2: shape" in text


def test_existing_output_needs_overwrite(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "v.safetensors")
    argv = ["vector", "from-prompts", "--model", str(tiny_model_dir), "--layer", "1"]
    argv += ["--pos", "Love", "--neg", "Hate", "--out", out]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_dataset_probe_iti_and_random_verbs(
    tiny_model: Model, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pos, neg = _files(tmp_path)
    m = str(tiny_model_dir)
    common = ["--model", m, "--pos-file", pos, "--neg-file", neg, "--json"]
    md = _json(
        capsys,
        [
            "vector",
            "from-datasets",
            *common,
            "--layer",
            "2",
            "--positions",
            "mean",
            "--out",
            str(tmp_path / "md.safetensors"),
        ],
    )
    direct = from_datasets(tiny_model, POS, NEG, 2, positions="mean")
    assert torch.allclose(SteeringVector.load(md["path"]).directions[2], direct.directions[2])
    assert md["info"]["separation"]["2"]["auroc"] == direct.info["separation"]["2"]["auroc"]
    pr = _json(
        capsys,
        [
            "vector",
            "probe",
            *common,
            "--layer",
            "1",
            "--test-size",
            "0.5",
            "--out",
            str(tmp_path / "probe.safetensors"),
        ],
    )
    assert pr["method"] == "probe" and pr["info"]["n_test_texts"] == 4
    iti = _json(
        capsys,
        [
            "vector",
            "iti",
            *common,
            "--k",
            "2",
            "--test-size",
            "0.5",
            "--out",
            str(tmp_path / "iti.safetensors"),
        ],
    )
    assert iti["site"] == "z" and len(iti["info"]["heads"]) == 2
    assert np.array(iti["info"]["accuracy_table"]).shape == (4, 4)
    assert main(["vector", "info", iti["path"]]) == 0
    assert "heads (layer.head" in capsys.readouterr().out
    rnd = _json(
        capsys,
        [
            "vector",
            "random",
            "--like",
            md["path"],
            "--seed",
            "3",
            "--json",
            "--out",
            str(tmp_path / "rnd.safetensors"),
        ],
    )
    assert rnd["method"] == "random" and rnd["norms"]["2"] == pytest.approx(md["norms"]["2"])
    expected = random_like(SteeringVector.load(md["path"]), 3)
    assert torch.equal(SteeringVector.load(rnd["path"]).directions[2], expected.directions[2])


def test_dictionary_and_sae_verbs(
    tiny_model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dictionaries

    X = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
    info = dictionaries.DictionaryInfo(model=tiny_model.name, site="resid_post", layer=3)
    pca = dictionaries.create("pca", n_components=3).fit(X, info=info)
    pca.save(tmp_path / "pca")
    res = _json(
        capsys,
        [
            "vector",
            "from-component",
            "--dictionary",
            str(tmp_path / "pca"),
            "--index",
            "1",
            "--sign",
            "-1",
            "--out",
            str(tmp_path / "c.safetensors"),
            "--json",
        ],
    )
    assert res["site"] == "resid_post" and res["layers"] == [3] and res["method"] == "component"
    got = SteeringVector.load(res["path"]).directions[3]
    assert torch.allclose(got, -torch.from_numpy(pca.components_[1]))

    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(model_name=tiny_model.name, hook_name="blocks.1.hook_resid_pre")
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=8, metadata=meta))
    with torch.no_grad():
        sae.W_dec.normal_()
    sae.save_model(tmp_path / "sae")
    res = _json(
        capsys,
        [
            "vector",
            "from-sae",
            "--sae",
            str(tmp_path / "sae"),
            "--feature",
            "6",
            "--out",
            str(tmp_path / "f.safetensors"),
            "--json",
        ],
    )
    assert res["layers"] == [1] and res["method"] == "sae_feature"
    assert torch.allclose(SteeringVector.load(res["path"]).directions[1], sae.W_dec[6].detach())


def test_bad_inputs_exit_2_with_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = str(tiny_model_dir)
    out = str(tmp_path / "x.safetensors")
    pos, neg = _files(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    cases = [
        (
            ["from-prompts", "--model", m, "--layer", "9", "--pos", "a", "--neg", "b"],
            "out of range",
        ),
        (
            [
                "from-prompts",
                "--model",
                m,
                "--layer",
                "1",
                "--pos",
                "a",
                "--pos",
                "b",
                "--neg",
                "c",
            ],
            "as many positive",
        ),
        (
            [
                "from-datasets",
                "--model",
                m,
                "--layer",
                "1",
                "--pos-file",
                str(tmp_path / "no.txt"),
                "--neg-file",
                neg,
            ],
            "does not exist",
        ),
        (
            [
                "from-datasets",
                "--model",
                m,
                "--layer",
                "1",
                "--pos-file",
                pos,
                "--neg-file",
                str(tmp_path / "empty.txt"),
            ],
            "negative text set",
        ),
        (["info", str(corrupt)], "corrupt"),
        (["random", "--like", str(tmp_path / "missing.safetensors")], "not found"),
    ]
    for argv, msg in cases:
        full = ["vector", *argv] if argv[0] == "info" else ["vector", *argv, "--out", out]
        assert main(full) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not Path(out).exists()
