"""Input hygiene and the store-side statistics, on a synthetic store with a planted property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.activations.store import ActivationStore
from workbench.decompose.component_stats import between_doc_share, component_stats
from workbench.decompose.fit import evaluate_heldout, fit_from_store, make_dictionary
from workbench.decompose.hygiene import Hygiene, outlier_rows, select_rows
from workbench.decompose.inspect import component_codes
from workbench.errors import WorkbenchError
from workbench.model.load import Model
from workbench.testing import planted_store


@pytest.fixture(scope="module")
def store(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    path = tmp_path_factory.mktemp("hygiene") / "acts"
    planted_store(path, tiny_model, layer=1, n_docs=40)
    return ActivationStore.open(path)


def test_between_doc_share_separates_document_from_token_variation() -> None:
    rng = np.random.default_rng(0)
    doc = np.repeat(np.arange(50), 10)  # (500,)
    per_doc = rng.normal(size=50)[doc]  # constant within a document
    per_token = rng.normal(size=500)
    share = between_doc_share(np.stack([per_doc, per_token], axis=1), doc)
    assert share[0] == pytest.approx(1.0) and share[1] < 0.2


def test_select_rows_drops_massive_rows_and_first_positions(store: ActivationStore) -> None:
    rows = select_rows(store, 1, Hygiene())
    pos = store.rows_meta().pos.numpy()
    assert rows.dropped_norm == 40 and not rows.keep[pos == 1].any()
    assert rows.keep[pos > 1].all()
    early = select_rows(store, 1, Hygiene(max_norm_ratio=None, skip_first=2))
    assert early.dropped_position == 80 and early.norm_threshold is None
    assert not early.keep[pos <= 2].any() and early.keep[pos > 2].all()
    held = select_rows(store, 1, Hygiene(), exclude_docs=[0, 1])
    assert held.held_out == 16 and not held.keep[store.rows_meta().doc.numpy() < 2].any()


def test_outliers_are_left_out_of_codes_and_held_out_quality(store: ActivationStore) -> None:
    pca = fit_from_store(make_dictionary("pca", 4), store, 1, exclude_docs=[0, 1])
    outliers = outlier_rows(pca, store, 1)
    assert outliers is not None and int(outliers.sum()) == 40
    codes = component_codes(pca, store, 1, range(4))
    assert np.isnan(codes[outliers]).all() and np.isfinite(codes[~outliers]).all()
    quality = evaluate_heldout(pca, store, 1, [0, 1])
    assert quality["heldout_rows"] == 14 and quality["heldout_rows_over_norm_threshold"] == 2


def test_component_stats_rank_the_planted_property(store: ActivationStore) -> None:
    pca = fit_from_store(make_dictionary("pca", 4), store, 1)
    codes = component_codes(pca, store, 1, range(4))
    stats = component_stats(pca, store, 1, codes)
    shares = [s.between_doc_share for s in stats]
    known = [x for x in shares if x is not None]
    assert known == shares and int(np.argmax(known)) == 0 and known[0] > 0.9
    assert sum(s.variance_share for s in stats) <= 1.0 + 1e-6
    top, bottom = stats[0].top_docs, stats[0].bottom_docs
    assert len(top) == 3 and top[0].mean_code > bottom[0].mean_code
    assert {d.doc % 2 for d in top} != {d.doc % 2 for d in bottom}


def test_bad_hygiene_settings_are_one_line_errors(store: ActivationStore) -> None:
    with pytest.raises(WorkbenchError, match="above 1"):
        Hygiene(max_norm_ratio=0.5)
    with pytest.raises(WorkbenchError, match="unknown scale"):
        Hygiene(scale="zscore")
    with pytest.raises(WorkbenchError, match="dropped every row"):
        select_rows(store, 1, Hygiene(skip_first=100))


def test_hygiene_is_saved_with_the_dictionary(store: ActivationStore, tmp_path: Path) -> None:
    import dictionaries

    pca = fit_from_store(make_dictionary("pca", 4), store, 1, hygiene=Hygiene(scale="whiten"))
    pca.save(tmp_path / "d")
    back = dictionaries.load(tmp_path / "d")
    assert back.fit_stats_["input"]["scale"] == "whiten"
    assert back.scaler_ is not None and back.scaler_.scale == "whiten"
    np.testing.assert_array_equal(back.directions_, pca.directions_)
