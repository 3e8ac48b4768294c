from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.embedded import converted_folder, embedded_gguf, is_converted
from workbench.model.load import Model, list_models, load_model


def test_local_tiny_folder_loads_and_both_paths_agree(tiny_gpt2: Model) -> None:
    assert tiny_gpt2.n_layers == 4 and tiny_gpt2.d_model == 64
    ids, mask, truncated = tiny_gpt2.encode(["Hello world, I love you", "The fox"])
    assert truncated == [False, False]
    assert ids[:, 0].tolist() == [tiny_gpt2.bos_token_id] * 2
    assert mask[1].sum() < mask[0].sum()
    assert tiny_gpt2.hf is not None
    with torch.inference_mode():
        tl = tiny_gpt2.tl(ids, attention_mask=mask)  # (batch, pos, vocab)
        hf = tiny_gpt2.hf(input_ids=ids, attention_mask=mask).logits
    assert (tl - hf)[mask.bool()].abs().max() < 1e-4


def test_encode_left_padding_and_truncation(tiny_model: Model) -> None:
    ids, mask, truncated = tiny_model.encode(["a b c d e f g", "a"], padding_side="left")
    assert mask[1, -1] == 1 and mask[1, 0] == 0
    ids, mask, truncated = tiny_model.encode(["word " * 500])
    assert truncated == [True] and ids.shape[1] == tiny_model.n_ctx


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(WorkbenchError, match="unknown model 'no-such-model'.*smollm2-135m"):
        load_model("no-such-model")


def test_missing_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="GGUF file not found"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(WorkbenchError, match="no config.json"):
        load_model(str(tmp_path))


def test_layer_check_names_valid_range(tiny_model: Model) -> None:
    with pytest.raises(WorkbenchError, match=r"valid layers are 0\.\.3"):
        tiny_model.check_layer(4)


def test_list_models_names_default() -> None:
    rows = list_models()
    default = [r for r in rows if r["default"]]
    assert default and default[0]["name"] == "smollm2-135m"


def test_interrupted_conversion_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    folder = converted_folder(fake)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a half-written folder with no marker
    assert not is_converted(folder)


@pytest.mark.real_model
def test_default_model_matches_transformers(default_model: Model) -> None:
    gguf = embedded_gguf("smollm2-135m")
    assert gguf is not None and is_converted(converted_folder(gguf))
    assert (default_model.n_layers, default_model.d_model) == (30, 576)
    ids, mask, _ = default_model.encode(["The capital of France is", "I love dogs because"])
    assert default_model.hf is not None
    with torch.inference_mode():
        tl = default_model.tl(ids, attention_mask=mask)
        hf = default_model.hf(input_ids=ids, attention_mask=mask).logits
    assert (tl - hf)[mask.bool()].abs().max() < 1e-3


# --------------------------------------------------------------------------- devices and dtypes


def test_devices_resolve_or_give_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.model.load import check_dtype, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    for bad, message in [
        ("cuda", "no CUDA GPU is available"),
        ("mps", "MPS backend is not available"),
        ("tpu", "unknown device 'tpu'"),
    ]:
        with pytest.raises(WorkbenchError, match=message):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(WorkbenchError, match="there are 2 CUDA devices"):
        resolve_device("cuda:2")
    assert check_dtype("bfloat16", "cpu") == torch.bfloat16
    assert check_dtype("float16", "cuda") == torch.float16
    with pytest.raises(WorkbenchError, match="float16 is not supported on the CPU"):
        check_dtype("float16", "cpu")
    with pytest.raises(WorkbenchError, match="unknown dtype 'int8'"):
        check_dtype("int8", "cpu")


def test_bfloat16_model_steers_and_captures_in_its_dtype(tiny_model_dir: Path) -> None:
    """A model loaded in bfloat16 keeps its weights in bfloat16; steering adds the vector in
    that dtype and what is captured comes back float32 on the CPU."""
    from workbench.activations.collect import run_sites
    from workbench.model.hooks import Site
    from workbench.model.load import model_defaults
    from workbench.steer.forward import steered_logits
    from workbench.steer.plan import SteeringPlan
    from workbench.vectors.build import from_prompts

    with model_defaults(dtype="bfloat16"):
        model = load_model(str(tiny_model_dir), reuse=False)
    assert model.dtype == torch.bfloat16 and model.info["dtype"] == "bfloat16"
    assert model.device.type == "cpu" and model.info["device"] == "cpu"
    acts = run_sites(model, model.encode(["Hello world"])[0], [Site("resid_pre", 1)])
    assert acts[Site("resid_pre", 1)].dtype == torch.float32
    vec = from_prompts(model, "Love", "Hate", [1])
    clean = steered_logits(model, ["Hello world"], None)[0]
    steered = steered_logits(model, ["Hello world"], SteeringPlan.of(vec, 4.0))[0]
    assert clean.dtype == torch.float32 and (steered - clean).abs().max() > 1e-2
    ref = load_model(str(tiny_model_dir))  # float32
    ref_logits = steered_logits(ref, ["Hello world"], None)[0]
    assert (clean - ref_logits).abs().max() < 0.5  # the same model, rounded to bfloat16


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "cuda:7"], "CUDA"),
        (["--device", "tpu"], "unknown device"),
        (["--dtype", "int8"], "unknown dtype"),
    ],
)
def test_device_and_dtype_flags_on_every_model_verb(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from workbench.cli import main

    verbs = [
        ["steer", "--vector", str(tmp_path / "v.safetensors"), "--coeff", "1", "--prompt", "x"],
        ["capture", "--corpus", "builtin:general", "--layers", "1", "--out", str(tmp_path / "s")],
        ["vector", "from-prompts", "--pos", "a", "--neg", "b", "--layer", "1", "--out", "v.st"],
        ["demo", "--out", str(tmp_path / "demo")],
    ]
    for argv in verbs:
        assert main([*argv, *flags]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
