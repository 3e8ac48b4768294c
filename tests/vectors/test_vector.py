from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.vectors.vector import SteeringVector


def _vec(layers: dict[int, torch.Tensor], **kw: Any) -> SteeringVector:
    return SteeringVector(directions=layers, model="m", d_model=4, **kw)


def test_arithmetic_on_shared_and_disjoint_layers() -> None:
    a = _vec({1: torch.tensor([1.0, 0, 0, 0])}, layer_norms={1: 2.0})
    b = _vec({1: torch.tensor([0.0, 1, 0, 0]), 3: torch.tensor([0.0, 0, 1, 0])})
    s = a + b
    assert s.layers == [1, 3]
    assert torch.equal(s.directions[1], torch.tensor([1.0, 1, 0, 0]))
    d = a - b
    assert torch.equal(d.directions[3], torch.tensor([0.0, 0, -1, 0]))
    assert torch.equal((3 * a).directions[1], torch.tensor([3.0, 0, 0, 0]))
    assert torch.equal((-a).directions[1], torch.tensor([-1.0, 0, 0, 0]))
    assert s.layer_norms == {1: 2.0}


def test_aligned_vectors_add_front_aligned() -> None:
    a = _vec({2: torch.ones(3, 4)})
    b = _vec({2: torch.ones(1, 4)})
    s = a + b
    assert s.aligned
    assert s.directions[2][:, 0].tolist() == [2.0, 1.0, 1.0]


def test_normalize_and_orthogonalize() -> None:
    a = _vec({0: torch.tensor([3.0, 4, 0, 0])})
    assert abs(a.normalized().norm(0) - 1.0) < 1e-6
    b = _vec({0: torch.tensor([1.0, 0, 0, 0])})
    o = a.orthogonalized(b)
    assert torch.allclose(o.directions[0], torch.tensor([0.0, 4, 0, 0]))


def test_norm_units() -> None:
    a = _vec({5: torch.tensor([0.0, 2, 0, 0])}, layer_norms={5: 10.0})
    assert a.raw_coefficient(3.0, 5, "raw") == 3.0
    # 0.5 residual norms = 5.0 in absolute norm; the direction has norm 2 -> multiplier 2.5
    assert a.raw_coefficient(0.5, 5, "norm") == pytest.approx(2.5)
    with pytest.raises(WorkbenchError, match="no residual norm"):
        a.raw_coefficient(1.0, 4, "norm")
    with pytest.raises(WorkbenchError, match="not a finite number"):
        a.raw_coefficient(float("nan"), 5)


def test_save_load_round_trip_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = _vec(
        {1: torch.randn(4), 2: torch.randn(3, 4)},
        method="prompt_pair",
        recipe={"pos": "Love", "neg": "Hate"},
        layer_norms={1: 1.5, 2: 2.5},
        info={"note": "x"},
    )
    path = a.save(tmp_path / "v")
    assert path.name == "v.safetensors"
    b = SteeringVector.load(path)
    for k in a.layers:
        assert torch.equal(a.directions[k], b.directions[k])
    assert (b.method, b.recipe, b.layer_norms, b.info) == (
        a.method,
        a.recipe,
        a.layer_norms,
        a.info,
    )


def test_corrupt_and_truncated_files_refused(tmp_path: Path) -> None:
    path = _vec({1: torch.randn(4)}).save(tmp_path / "v.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="corrupt or truncated"):
        SteeringVector.load(path)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(WorkbenchError, match="checksum"):
        SteeringVector.load(path)


def test_other_model_or_width_or_site_refused() -> None:
    a = _vec({1: torch.randn(4)})
    with pytest.raises(WorkbenchError, match="made for m .*d_model 4.* other"):
        a.check_compatible("other", 4)
    with pytest.raises(WorkbenchError, match="d_model 8"):
        a.check_compatible("m", 8)
    with pytest.raises(WorkbenchError, match="site resid_pre"):
        a.check_compatible("m", 4, site="resid_post")
    b = SteeringVector(directions={1: torch.randn(8)}, model="n", d_model=8)
    with pytest.raises(WorkbenchError, match="cannot combine"):
        _ = a + b


def test_bad_entries_refused() -> None:
    with pytest.raises(WorkbenchError, match="non-finite"):
        _vec({1: torch.tensor([float("nan"), 0, 0, 0])})
    with pytest.raises(WorkbenchError, match="width 3"):
        _vec({1: torch.zeros(3)})
    with pytest.raises(WorkbenchError, match="at least one layer"):
        _vec({})
