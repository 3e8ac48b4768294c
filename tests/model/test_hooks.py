from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.hooks import (
    Site,
    StopForward,
    add_hooks,
    default_backend,
    hooks_applied,
    recording,
)
from workbench.model.load import Model, load_model

KINDS = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]


def _run(model: Model, backend: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if backend == "tl":
            return model.tl(ids, attention_mask=mask)
        assert model.hf is not None
        return model.hf(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2"])
@pytest.mark.parametrize("kind", KINDS)
def test_both_backends_see_and_steer_the_same(
    request: pytest.FixtureRequest, model_name: str, kind: str
) -> None:
    model: Model = request.getfixturevalue(model_name)
    ids, mask, _ = model.encode(["Hello world, I love you", "The fox"])
    site = Site(kind, 2)
    seen = {}
    for backend in ("tl", "hf"):
        with recording(model, [site], backend=backend) as rec:
            _run(model, backend, ids, mask)
        seen[backend] = rec[site]
    assert seen["tl"].shape == seen["hf"].shape
    keep = mask.bool()
    assert (seen["tl"] - seen["hf"])[keep].abs().max() < 1e-4
    torch.manual_seed(0)
    delta = torch.randn(seen["tl"].shape[2:])
    out = {}
    for backend in ("tl", "hf"):
        with hooks_applied(model, [(site, lambda x: x + delta)], backend=backend):
            out[backend] = _run(model, backend, ids, mask)
    clean = _run(model, "tl", ids, mask)
    assert (out["tl"] - out["hf"])[keep].abs().max() < 1e-4
    assert (out["tl"] - clean)[keep].abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_hooks_removed_after_exception_and_user_hooks_kept(tiny_model: Model, backend: str) -> None:
    ids, mask, _ = tiny_model.encode(["Hello world"])
    clean = _run(tiny_model, backend, ids, mask)
    user_calls = []
    user = tiny_model.tl.hook_dict["blocks.1.hook_resid_pre"].register_forward_hook(
        lambda *a: user_calls.append(1)
    )
    try:
        with (
            pytest.raises(RuntimeError, match="boom"),
            hooks_applied(tiny_model, [(Site("resid_pre", 1), lambda x: x * 100)], backend=backend),
        ):
            raise RuntimeError("boom")
        assert torch.equal(_run(tiny_model, backend, ids, mask), clean)
        _run(tiny_model, "tl", ids, mask)
        assert user_calls, "the user's own hook must survive our cleanup"
    finally:
        user.remove()


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_failure_halfway_through_registration_rolls_back(tiny_model: Model, backend: str) -> None:
    ids, mask, _ = tiny_model.encode(["Hello world"])
    clean = _run(tiny_model, backend, ids, mask)
    hooks = [(Site("resid_pre", 1), lambda x: x * 100), (Site("resid_pre", 99), lambda x: x)]
    with pytest.raises(WorkbenchError, match="valid layers are 0..3"):
        add_hooks(tiny_model, hooks, backend=backend)
    assert torch.equal(_run(tiny_model, backend, ids, mask), clean)


def test_identity_hook_leaves_logits_exactly_unchanged(tiny_model: Model) -> None:
    ids, mask, _ = tiny_model.encode(["Hello world"])
    clean = _run(tiny_model, "hf", ids, mask)
    with hooks_applied(tiny_model, [(Site("resid_post", 0), lambda x: x + 0.0 * x)], backend="hf"):
        assert torch.equal(_run(tiny_model, "hf", ids, mask), clean)


def test_site_parsing_and_errors() -> None:
    assert Site.parse("blocks.3.hook_resid_pre") == Site("resid_pre", 3)
    assert Site.parse("blocks.5.attn.hook_z") == Site("z", 5)
    assert Site.parse("mlp_out", 2).tl_name == "blocks.2.hook_mlp_out"
    with pytest.raises(WorkbenchError, match="unknown site"):
        Site("resid_middle", 1)
    with pytest.raises(WorkbenchError, match="needs a layer"):
        Site.parse("resid_pre")


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2", "tiny_gemma3"])
def test_branch_sites_add_up_and_resid_mid_steers_in_place(
    request: pytest.FixtureRequest, model_name: str
) -> None:
    """On the transformers path: resid_pre + attn_out = resid_mid, resid_mid + mlp_out =
    resid_post (Gemma 3 included, whose branches end in a norm); steering resid_mid moves it
    by exactly the added vector."""
    model: Model = request.getfixturevalue(model_name)
    ids, mask, _ = model.encode(["Hello world, I love you", "The fox"])
    kinds = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
    sites = {k: Site(k, 1) for k in kinds}
    with recording(model, list(sites.values()), backend="hf") as rec:
        _run(model, "hf", ids, mask)
    got = {k: rec[s] for k, s in sites.items()}
    assert (got["resid_pre"] + got["attn_out"] - got["resid_mid"]).abs().max() < 1e-4
    assert (got["resid_mid"] + got["mlp_out"] - got["resid_post"]).abs().max() < 1e-4
    delta = torch.randn(model.d_model)
    steer = [(sites["resid_mid"], lambda x: x + delta)]
    with (
        hooks_applied(model, steer, backend="hf"),
        recording(model, [sites["resid_mid"]], backend="hf") as after,
    ):
        _run(model, "hf", ids, mask)
    assert (after[sites["resid_mid"]] - got["resid_mid"] - delta).abs().max() < 1e-4


def test_default_load_builds_no_transformerlens_copy(tiny_model_dir: Path) -> None:
    """One resident copy: loading, capture, steering and the logit lens run on the transformers
    model; the TransformerLens view is built only when asked for."""
    from workbench.activations.collect import collect
    from workbench.decompose.inspect import logit_lens
    from workbench.steer.apply import apply_plan
    from workbench.steer.plan import SteeringPlan
    from workbench.vectors.build import from_prompts

    model = load_model(str(tiny_model_dir), reuse=False)
    assert not model.tl_built
    sites = [Site(k, 1) for k in ("resid_pre", "resid_mid", "z")]
    collect(model, ["Hello world"], sites, "all")
    vec = from_prompts(model, "Love", "Hate", [1])
    with apply_plan(model, SteeringPlan.of(vec, 2.0)):
        _run(model, "hf", *model.encode(["Hello world"])[:2])
    logit_lens(model, torch.randn(model.d_model))
    assert not model.tl_built, "a second copy of the weights was built"
    assert model.tl.cfg.d_model == model.d_model and model.tl_built


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_recording_with_stop_ends_the_pass_after_the_last_site(
    tiny_model: Model, backend: str
) -> None:
    ids, mask, _ = tiny_model.encode(["Hello world"])
    sites = [Site("resid_post", 1), Site("z", 1)]
    later: list[int] = []
    spy = [(Site("resid_pre", 2), lambda x: later.append(1))]
    with (
        hooks_applied(tiny_model, spy, backend=backend),
        pytest.raises(StopForward),
        recording(tiny_model, sites, backend=backend, stop=True) as rec,
    ):
        _run(tiny_model, backend, ids, mask)
    assert set(rec) == set(sites)
    assert not later, "layers after the last recorded site must not run"
    with recording(tiny_model, sites, backend=backend) as full:
        _run(tiny_model, backend, ids, mask)
    assert torch.equal(rec[Site("resid_post", 1)], full[Site("resid_post", 1)])


def test_the_transformers_model_is_the_default_backend(tiny_model: Model) -> None:
    # every site kind, resid_mid and z included, is reached on it: no TransformerLens copy
    assert default_backend(tiny_model) == "hf"
