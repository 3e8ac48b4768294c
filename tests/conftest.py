"""Shared fixtures: tiny randomly initialised models (Llama, GPT-2 and Gemma 3 shaped), built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from workbench.model.load import Model, load_model
from workbench.testing import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Model:
    """A 4-layer, d_model 64 random Llama-architecture model (same family as the default)."""
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir: Path) -> Model:
    return load_model(str(tiny_gpt2_dir))


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A tiny random Gemma 3 block stack: a norm after each branch, so its attn_out and mlp_out
    are the normed branch outputs."""
    return load_model(str(make_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), arch="gemma3")))


@pytest.fixture(scope="session")
def default_model() -> Model:
    """The embedded default model (SmolLM2-135M); only for tests marked ``real_model``."""
    return load_model("smollm2-135m")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # WORKBENCH_SKIP_REAL=1 lets a developer run only the fast tests.
    if os.environ.get("WORKBENCH_SKIP_REAL") == "1":
        skip = pytest.mark.skip(reason="WORKBENCH_SKIP_REAL=1")
        for item in items:
            if "real_model" in item.keywords:
                item.add_marker(skip)


_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tiny models run faster on one thread (and don't fight other processes for the cores);
    tests of the real model get all threads."""
    torch.set_num_threads(_THREADS if "real_model" in request.keywords else 1)
    yield
    torch.set_num_threads(_THREADS)
