"""Capture on Ray: the same store as one process, row for row; a killed worker's range is redone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.activations.capture import capture
from workbench.activations.ray_capture import capture_ray
from workbench.activations.store import ActivationStore
from workbench.cli import main
from workbench.model.load import Model

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e .[ray]")

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "rain",
    "fell",
    "over",
    "quiet",
    "hills",
    "and",
    "bright",
    "rivers",
    "ran",
]
DOCS = [" ".join(WORDS[(i * 3) % 7 : (i * 3) % 7 + 2 + i % 9]) for i in range(24)]
OPTIONS: dict[str, Any] = {
    "layers": [3, 1],
    "positions": "all",
    "dtype": "float32",
    "shard_rows": 8,
    "batch_size": 4,
}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    out = tmp_path_factory.mktemp("single") / "store"
    capture(tiny_model, DOCS, out=out, progress_bar=False, **OPTIONS)
    return ActivationStore.open(out)


def _assert_same_rows(store: ActivationStore, ref: ActivationStore) -> None:
    assert store.n_rows == ref.n_rows
    for got, want in zip(store.rows_meta(), ref.rows_meta(), strict=True):
        assert torch.equal(got, want)
    for layer in ref.layers:
        assert torch.equal(store.load(layer), ref.load(layer))
    assert store.manifest["shards"] == ref.manifest["shards"]  # same files, rows and sums
    for s in ref.manifest["shards"]:
        assert (store.path / s["file"]).read_bytes() == (ref.path / s["file"]).read_bytes()
    assert sorted(p.name for p in store.path.iterdir()) == sorted(
        p.name for p in ref.path.iterdir()
    )  # no temporary files left


def test_ray_capture_equals_single_process(
    ray_local: Any, tiny_model: Model, reference: ActivationStore, tmp_path: Path
) -> None:
    res = capture_ray(tiny_model, DOCS, out=tmp_path / "ray", workers=2, **OPTIONS)
    assert res.shards > 4 and not res.resumed  # several ranges, so both actors had work
    _assert_same_rows(ActivationStore.open(res.path), reference)


def test_killed_worker_range_is_recaptured(
    ray_local: Any, tiny_model: Model, reference: ActivationStore, tmp_path: Path
) -> None:
    flag = tmp_path / "killed-once"

    def die_once(index: int) -> None:
        # After writing shard 1 (mid-range: ranges hold several shards), the worker dies.
        if index == 1 and not flag.exists():
            flag.touch()
            os._exit(1)

    res = capture_ray(
        tiny_model, DOCS, out=tmp_path / "ray", workers=2, on_shard=die_once, **OPTIONS
    )
    assert flag.exists()  # the worker did die
    _assert_same_rows(ActivationStore.open(res.path), reference)


def test_unreachable_address_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.perf_counter()
    args = ["capture", "--corpus", "builtin:general", "--layers", "1"]
    code = main([*args, "--out", str(tmp_path / "s"), "--ray", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.perf_counter() - t0 < 10
    assert len(err.splitlines()) == 1 and "ray start --head" in err, err
