from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.vectors.iti import from_iti, head_accuracy_table, head_shift, select_heads
from workbench.vectors.probe import split_texts
from workbench.vectors.vector import SteeringVector


def _planted(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-head outputs (n, 3 layers, 4 heads, 8) where only head (1, 2) carries the label."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) < n // 2).astype(int)
    Z = rng.standard_normal((n, 3, 4, 8))
    u = rng.standard_normal(8)
    u /= np.linalg.norm(u)
    Z[:, 1, 2] += np.outer(y, 2.5 * u)
    return Z, y, u


def test_planted_head_ranks_first_with_its_shift() -> None:
    Z, y, u = _planted()
    tr, te = split_texts(200, 200, test_size=0.25, seed=0)
    table, loss = head_accuracy_table(Z, y, tr, te)
    assert table.shape == (3, 4) and loss.shape == (3, 4)
    assert loss[1, 2] < 0.5 * np.delete(loss.reshape(-1), 6).min()
    assert table[1, 2] > 0.9
    others = np.delete(table.reshape(-1), 1 * 4 + 2)
    assert others.max() < 0.7
    assert select_heads(table, 1) == [(1, 2)]
    shift, sigma = head_shift(Z[:, 1, 2], y)
    assert shift @ u / np.linalg.norm(shift) > 0.98
    # Projections on u: half the rows at 0, half at 2.5, plus unit noise.
    assert sigma == pytest.approx(np.sqrt(1.0 + 2.5**2 / 4), rel=0.1)
    assert np.linalg.norm(shift) == pytest.approx(sigma)


def test_select_heads_orders_by_accuracy_then_position() -> None:
    table = np.array([[0.5, 0.9, 0.7], [0.9, 0.6, 0.95]])
    assert select_heads(table, 3) == [(1, 2), (0, 1), (1, 0)]
    loss = np.array([[0.7, 0.3, 0.5], [0.2, 0.6, 0.1]])
    assert select_heads(table, 3, tiebreak=loss) == [(1, 2), (1, 0), (0, 1)]
    with pytest.raises(WorkbenchError, match=r"k=7 heads is out of range.*1\.\.6"):
        select_heads(table, 7)


def test_iti_on_tiny_model(tiny_model: Model, tmp_path: Path) -> None:
    pos = ["The bride smiled", "Wedding bells rang", "Vows at the altar", "The groom waited"]
    neg = ["The train was late", "Rain fell again", "He fixed a bicycle", "Stocks fell today"]
    v = from_iti(tiny_model, pos, neg, k=3, test_size=0.5, seed=1)
    assert v.site == "z" and v.method == "iti"
    L, H, dh = tiny_model.n_layers, tiny_model.n_heads, tiny_model.d_head
    table = np.array(v.info["accuracy_table"])
    assert table.shape == (L, H)
    heads = [(h["layer"], h["head"]) for h in v.info["heads"]]
    loss = np.array(v.info["loss_table"])
    assert len(heads) == 3 and heads == select_heads(table, 3, tiebreak=loss)
    nonzero = [
        (layer, head)
        for layer, t in v.directions.items()
        for head in range(H)
        if t[head].abs().sum() > 0
    ]
    assert sorted(nonzero) == sorted(heads)
    for h in v.info["heads"]:
        t = v.directions[h["layer"]]
        assert t.shape == (H, dh)
        assert float(t[h["head"]].norm()) == pytest.approx(h["sigma"], rel=1e-4)
    assert set(v.layer_norms) == set(v.layers)
    saved = SteeringVector.load(v.save(tmp_path / "iti.safetensors"))
    assert saved.info["accuracy_table"] == v.info["accuracy_table"]
    assert all(torch.equal(saved.directions[k], v.directions[k]) for k in v.layers)


def test_iti_bad_inputs(tiny_model: Model) -> None:
    pos, neg = ["a b", "c d"], ["e f", "g h"]
    with pytest.raises(WorkbenchError, match="k=17 heads is out of range"):
        from_iti(tiny_model, pos, neg, k=17)
    with pytest.raises(WorkbenchError, match="unknown positions 'all'"):
        from_iti(tiny_model, pos, neg, positions="all")
    with pytest.raises(WorkbenchError, match="negative text set is empty"):
        from_iti(tiny_model, pos, [])
