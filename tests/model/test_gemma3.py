"""Gemma 3 270M, the second real model, end to end: it loads offline from its chunk packages, and
capture, discover, steer, sweep and compose run on it. Plus the fast checks around it: ``workbench
models`` lists it, and a GGUF of an architecture the loader does not know is a one-line error.

The model is loaded once for the module (~8 s warm; the one-time assembly and conversion take
~1 min and are cached under ``$WORKBENCH_CACHE``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workbench.activations.capture import capture
from workbench.activations.store import ActivationStore
from workbench.cli import main
from workbench.decompose.discover import discover
from workbench.decompose.fit import fit_from_store, make_dictionary
from workbench.decompose.trials import TrialSettings
from workbench.errors import WorkbenchError
from workbench.model.embedded import converted_folder, embedded_gguf, embedded_installed
from workbench.model.load import Model, list_models, load_model
from workbench.steer.forward import steered_logits
from workbench.steer.generate import generate
from workbench.steer.plan import SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.vectors.prompts import from_prompts
from workbench.vectors.vector import SteeringVector

NAME = "gemma3-270m"
LAYER = 6
GREEDY = Sampling(max_new_tokens=8, temperature=0)
DOCS = [
    "The committee will reconvene on Thursday to review the proposal.",
    "lol that movie was sooo good, we gotta go again",
    "Please find attached the quarterly report for your consideration.",
    "omg my cat just knocked my coffee off the table haha",
    "The bride and groom danced at the wedding reception.",
    "Rain is expected across the northern regions tomorrow morning.",
]


def _small(folder: Path) -> list[str]:
    """Two short texts and prompts of each kind (every forward pays for Gemma's 262k-token
    unembedding, so text length is what a test's time is made of)."""
    (folder / "on.txt").write_text("The bride smiled.\nThe wedding was lovely.\n")
    (folder / "off.txt").write_text("The train was late.\nShe fixed the bike.\n")
    (folder / "prompts.txt").write_text("I think that\nYesterday we\n")
    return [
        "--on-target", str(folder / "on.txt"), "--off-target", str(folder / "off.txt"),
        "--prompts", str(folder / "prompts.txt"), "--neutral", str(folder / "prompts.txt"),
        "--n-prompts", "2", "--n-sentences", "2", "--n-neutral", "2", "--max-new-tokens", "4",
    ]  # fmt: skip


needs_gemma = pytest.mark.skipif(
    not embedded_installed(NAME), reason="the Gemma 3 packages are not installed (make setup)"
)


# --------------------------------------------------------------------------- fast checks


def test_list_models_lists_gemma_with_its_flags() -> None:
    row = next(r for r in list_models() if r["name"] == NAME)
    assert row["kind"] == "embedded" and not row["default"]
    assert row["available"] is embedded_installed(NAME)
    gguf = embedded_gguf(NAME, assemble=False)
    assert row["cached"] is bool(gguf and (converted_folder(gguf) / "config.json").exists())
    assert "Gemma 3" in row["description"]


def test_models_verb_prints_gemma(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME))
    assert "Gemma 3" in line


def _gguf_of_architecture(path: Path, arch: str) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unknown_gguf_architecture_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = _gguf_of_architecture(tmp_path / "odd.gguf", "wombat")
    with pytest.raises(WorkbenchError) as e:
        load_model(str(path), reuse=False)
    message = str(e.value)
    assert "\n" not in message
    assert "architecture 'wombat'" in message and "transformers folder" in message
    assert "gemma3" in message and "llama" in message  # the architectures that do load
    assert not list(tmp_path.rglob("config.json"))  # nothing half-converted to trust
    argv = ["vector", "from-prompts", "--model", str(path), "--layer", "1"]
    argv += ["--pos", "Love", "--neg", "Hate", "--out", str(tmp_path / "v.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "architecture 'wombat'" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def gemma() -> Iterator[Model]:
    if not embedded_installed(NAME):
        pytest.skip("the Gemma 3 packages are not installed (make setup)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # everything comes from the installed packages
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        # Not kept in the process-wide cache: its 1.1 GB is freed when this module ends.
        yield load_model(NAME, device="cpu", dtype="float32", reuse=False)


@pytest.fixture(scope="module")
def wedding(gemma: Model) -> SteeringVector:
    return from_prompts(gemma, " wedding", " ", [LAYER])


@needs_gemma
@pytest.mark.real_model
def test_loads_offline_with_its_config_and_talks(gemma: Model) -> None:
    assert gemma.hf is not None and type(gemma.hf).__name__ == "Gemma3ForCausalLM"
    config = gemma.hf.config
    assert (gemma.n_layers, gemma.d_model) == (config.num_hidden_layers, config.hidden_size)
    assert (gemma.n_layers, gemma.d_model) == (18, 640)
    assert not gemma.tl_built  # TransformerLens has no Gemma 3: nothing may have needed it
    gguf = embedded_gguf(NAME, assemble=False)
    assert gguf is not None and next(r for r in list_models() if r["name"] == NAME)["cached"]
    gen = generate(gemma, ["The capital of France is", "Once upon a time,"], sampling=GREEDY)
    for text in gen.texts:
        ids = gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert text.strip() and len(set(ids)) >= 3, text  # not empty, not one token repeated


@pytest.fixture(scope="module")
def store(gemma: Model, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    out = tmp_path_factory.mktemp("gemma-acts") / "acts"
    capture(gemma, DOCS, [LAYER], max_tokens=24, out=out, progress_bar=False)
    return ActivationStore.open(out)


@needs_gemma
@pytest.mark.real_model
def test_capture_stores_every_token(gemma: Model, store: ActivationStore) -> None:
    lengths = [len(gemma.tokenizer(d, add_special_tokens=False)["input_ids"]) for d in DOCS]
    assert store.n_rows == sum(min(n, 23) for n in lengths)  # every real token but BOS
    assert store.manifest["model"] == NAME and store.d_model == 640
    acts = store.load(LAYER)  # (rows, d_model)
    assert torch.isfinite(acts).all() and acts.norm(dim=-1).min() > 0


@needs_gemma
@pytest.mark.real_model
def test_discover_calibrates_candidates(
    gemma: Model, store: ActivationStore, tmp_path: Path
) -> None:
    pca = fit_from_store(make_dictionary("pca", 2), store, LAYER)
    _small(tmp_path)
    settings = TrialSettings(
        prompts=str(tmp_path / "prompts.txt"),
        damage_texts=str(tmp_path / "off.txt"),
        n_prompts=2,
        n_damage=2,
        max_new_tokens=4,
        n_completion_prompts=1,
        damage_max_tokens=12,
        n_random=1,
        steps=1,
    )
    found = discover(gemma, pca, store, settings=settings)
    assert found.model == NAME and found.layer == LAYER and found.candidates
    assert math.isfinite(found.mean_norm) and found.mean_norm > 0
    for c in found.candidates:
        assert c.vector.directions[LAYER].shape[-1] == 640
        assert c.ppl_ratio is None or math.isfinite(c.ppl_ratio)
        assert c.completions and all(isinstance(t, str) for t in c.completions)


@needs_gemma
@pytest.mark.real_model
def test_prompt_pair_vector_steers(gemma: Model, wedding: SteeringVector) -> None:
    texts = ["I went up to my friend and said"]
    base = steered_logits(gemma, texts).logits  # (1, pos, vocab)
    zero = steered_logits(gemma, texts, SteeringPlan.of(wedding, 0.0)).logits
    steered = steered_logits(gemma, texts, SteeringPlan.of(wedding, 8.0)).logits
    assert torch.equal(zero, base)  # coefficient 0 leaves the model as it was
    assert (steered - base).abs().max() > 1.0
    plain = generate(gemma, texts, sampling=GREEDY).texts
    pushed = generate(gemma, texts, SteeringPlan.of(wedding, 8.0), sampling=GREEDY).texts
    assert pushed != plain


@pytest.fixture
def _one_model(gemma: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    for verb in ("sweep", "compose"):
        monkeypatch.setattr(f"workbench.commands.{verb}.load_model", lambda *_a, **_k: gemma)


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@needs_gemma
@pytest.mark.real_model
@pytest.mark.usefixtures("_one_model")
def test_sweep_with_controls(
    wedding: SteeringVector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vec = wedding.save(tmp_path / "wedding.safetensors")
    argv = ["sweep", "--model", NAME, "--vector", str(vec), "--coeffs", "4", "--n", "0"]
    argv += ["--controls", "2", "--effect", "on_target", "--attention-prompts", "0"]
    argv += ["--target-words", "wedding,bride", *_small(tmp_path)]
    data = _json(capsys, [*argv, "--out", str(tmp_path / "sweep")])
    assert data["model"] == NAME
    assert sorted(r["coeff"] for r in data["rows"]) == [0.0, 4.0]
    assert data["controls"]["by_layer"][0]["matched"]["k"] == 2
    assert (tmp_path / "sweep" / "report.html").exists()


@needs_gemma
@pytest.mark.real_model
@pytest.mark.usefixtures("_one_model")
def test_compose_two_vectors_with_controls(
    gemma: Model, wedding: SteeringVector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    love = from_prompts(gemma, "Love", "Hate", [LAYER]).save(tmp_path / "love.safetensors")
    wed = wedding.save(tmp_path / "wedding.safetensors")
    argv = ["compose", "--model", NAME, "--vector", str(love), "--coeff", "4"]
    argv += ["--target-words", "love,happy", "--vector", str(wed), "--coeff", "4"]
    argv += ["--target-words", "wedding,bride", "--n", "0", "--controls", "2", *_small(tmp_path)]
    data = _json(capsys, argv)
    assert data["model"] == NAME and len(data["vectors"]) == 2
    assert data["controls"]["k"] == 2 and [len(r) for r in data["controls"]["retention"]] == [2, 2]
    assert all(math.isfinite(x) for x in np.ravel(data["retention"]) if x is not None)


class _FakeChunks:
    """Stands in for the chunk package: its assemble writes ``payload`` (then fails if told)."""

    EXPECTED_SHA256 = "0" * 64

    def __init__(self, payload: bytes, fail: bool = False) -> None:
        self.payload, self.fail = payload, fail

    def verify_chunks(self) -> None:
        pass

    def assemble(self, output_path: Path, overwrite: bool = False) -> Path:
        Path(output_path).write_bytes(self.payload)
        if self.fail:
            raise OSError("No space left on device")
        return Path(output_path)


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        (_FakeChunks(b"GGUF half", fail=True), "could not assemble"),
        (_FakeChunks(b"GGUF wrong bytes"), "does not match its sha256"),
    ],
)
def test_a_failed_or_wrong_assembly_is_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: _FakeChunks, match: str
) -> None:
    if not embedded_installed(NAME):
        pytest.skip("the Gemma 3 packages are not installed (make setup)")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr("workbench.model.embedded._gemma_package", lambda: chunks)
    with pytest.raises(WorkbenchError, match=match) as e:
        embedded_gguf(NAME)
    assert "\n" not in str(e.value) and "make setup" in str(e.value)
    assert embedded_gguf(NAME, assemble=False) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial file left
