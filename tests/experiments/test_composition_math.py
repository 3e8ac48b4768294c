"""Tests for workbench.experiments.composition_math on a synthetic additive model with known answers."""

from __future__ import annotations

import doctest
import json
import math

import pytest
import torch

import workbench.experiments.composition_math
from workbench.errors import WorkbenchError
from workbench.experiments.composition_math import (
    additive_model_effects,
    cosine_matrix,
    interference_matrix,
    retention,
)


def test_additive_orthogonal_vectors_retain_fully_without_interference() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 3, dtype=torch.float64))  # (16, 3) orthonormal
    vectors = q.T * torch.tensor(
        [[2.0], [1.0], [0.5]], dtype=torch.float64
    )  # (3, 16), orthogonal, different norms
    effects = additive_model_effects(vectors, q.T)
    kept = retention(effects.combined, effects.alone)
    assert torch.allclose(kept.values, torch.ones(3, dtype=torch.float64))
    assert not kept.unreliable.any()
    inter = interference_matrix(effects.pairs, effects.alone)
    assert torch.allclose(inter.matrix, torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)


def test_cancelling_pair_interferes_fully() -> None:
    v = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # v1 = -v0
    effects = additive_model_effects(v, v)
    inter = interference_matrix(effects.pairs, effects.alone).matrix
    assert inter[0, 1] == pytest.approx(1.0) and inter[1, 0] == pytest.approx(1.0)
    assert inter[0, 2] == pytest.approx(0.0) and inter[2, 0] == pytest.approx(0.0)
    assert inter.diagonal().eq(0).all()
    kept = retention(effects.combined, effects.alone).values
    assert kept.tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_amplifying_partner_gives_negative_interference() -> None:
    inter = interference_matrix([[0.0, 3.0], [1.0, 0.0]], [2.0, 1.0]).matrix
    assert inter[0, 1] == pytest.approx(-0.5) and inter[1, 0] == pytest.approx(0.0)


def test_negative_effects_keep_ratio_sign() -> None:
    # A metric that steering lowers: -2 alone, -1 combined keeps half the effect.
    assert retention([-1.0], [-2.0]).values.tolist() == [0.5]


def test_near_zero_alone_effect_is_flagged_not_nan() -> None:
    kept = retention([1.0, 0.3], [1e-9, 0.5], min_alone=1e-3)
    assert kept.unreliable.tolist() == [True, False]
    assert kept.values.tolist() == pytest.approx([1.0, 0.6])
    inter = interference_matrix([[0.0, 5.0], [0.1, 0.0]], [0.0, 0.5])
    assert torch.isfinite(inter.matrix).all()
    assert inter.unreliable.tolist() == [True, False]
    assert inter.matrix[0].eq(0).all() and inter.matrix[1, 0] == pytest.approx(0.8)
    assert json.loads(json.dumps(inter.to_json()))["unreliable"] == [True, False]
    assert json.loads(json.dumps(kept.to_json()))["values"][1] == pytest.approx(0.6)


def test_cosine_matrix() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # (pos, d_model): flattened before comparing
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    c = -a
    cos = cosine_matrix([a, b, c])
    assert cos.shape == (3, 3) and cos.dtype == torch.float64
    assert cos.diagonal().eq(1).all()
    assert cos[0, 1] == pytest.approx(1 / math.sqrt(2)) and cos[0, 2] == pytest.approx(-1.0)
    assert torch.equal(cos, cos.T)


def test_input_errors() -> None:
    with pytest.raises(WorkbenchError, match="one per vector"):
        retention([1.0, 2.0], [1.0])
    with pytest.raises(WorkbenchError, match="NaN"):
        retention([float("nan")], [1.0])
    with pytest.raises(WorkbenchError, match=r"must be \(2, 2\)"):
        interference_matrix([[0.0, 1.0, 2.0]], [1.0, 1.0])
    with pytest.raises(WorkbenchError, match="different sizes"):
        cosine_matrix([torch.ones(3), torch.ones(4)])
    with pytest.raises(WorkbenchError, match="all zeros"):
        cosine_matrix([torch.ones(3), torch.zeros(3)])
    with pytest.raises(WorkbenchError, match="no vectors"):
        cosine_matrix([])


def test_docstring_examples() -> None:
    result = doctest.testmod(workbench.experiments.composition_math)
    assert result.attempted > 0 and result.failed == 0
