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
