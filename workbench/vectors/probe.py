"""Linear probes and mass-mean directions on activation arrays (pure numpy + scikit-learn).

The ITI discussion compares two directions found from the same labelled activations: the normal
of a logistic-regression probe, and the "mass mean shift" (mean of positive minus mean of
negative activations). This module fits both on a train split and scores both as classifiers on
a held-out split, so the comparison is one call. It knows nothing about models: inputs are
``(n, d)`` arrays and 0/1 labels (1 = positive set).

Splits are made over *texts*, not rows, so that several rows of one text (``positions="all"``)
never land on both sides of the split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from workbench.errors import check


@dataclass
class ProbeResult:
    """A logistic-regression probe and the mean-difference direction on the same split.

    Attributes:
        coef: ``(d,)`` probe weights in the raw activation space (decision = ``x @ coef +
            intercept``; positive means the positive set).
        intercept: the probe's bias.
        mean_diff: ``(d,)`` mean of positive minus mean of negative training rows.
        threshold: the mean-difference classifier's cut on ``x @ mean_diff`` (midpoint of the two
            projected training means).
        train_accuracy, test_accuracy: the probe's accuracy on the train and held-out rows.
        mean_diff_train_accuracy, mean_diff_test_accuracy: the same for the mean-difference
            direction used as a classifier.
        test_auroc, mean_diff_test_auroc: held-out AUROC of each direction's projections
            (threshold-free, so a miscalibrated intercept does not hide a good direction).
        cosine: cosine similarity between ``coef`` and ``mean_diff``.
    """

    coef: np.ndarray
    intercept: float
    mean_diff: np.ndarray
    threshold: float
    train_accuracy: float
    test_accuracy: float
    mean_diff_train_accuracy: float
    mean_diff_test_accuracy: float
    test_auroc: float
    mean_diff_test_auroc: float
    cosine: float


def split_texts(
    n_pos: int, n_neg: int, test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of text indices ``0..n_pos+n_neg-1`` (positives first) into train/test.

    Each class keeps at least one text on each side, so both accuracies are defined.
    Returns ``(train_idx, test_idx)``, sorted.
    """
    check(
        0.0 < test_size < 1.0,
        f"test_size {test_size} must be between 0 and 1 (e.g. 0.25 holds out a quarter)",
    )
    check(
        n_pos >= 2 and n_neg >= 2,
        f"a held-out split needs at least 2 texts in each set (got {n_pos} positive, {n_neg} "
        "negative): add texts",
    )
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for start, n in ((0, n_pos), (n_pos, n_neg)):
        order = start + rng.permutation(n)
        n_test = min(n - 1, max(1, round(test_size * n)))
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X.mean(0)  # (d,)
    sd = X.std(0)  # (d,)
    # Residual streams have a few huge "massive activation" dimensions; scaling keeps lbfgs
    # well-conditioned. Constant features keep scale 1 so they are simply ignored.
    return mu, np.where(sd > 1e-8, sd, 1.0)


def _logistic(X: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> tuple[np.ndarray, float]:
    """Fit on standardised features; return raw-space ``(coef (d,), intercept)``."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = _standardise(X)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        # A probe that stops at max_iter is still a usable direction; accuracy says how good.
        warnings.simplefilter("ignore")
        clf.fit((X - mu) / sd, y)
    w_std = clf.coef_[0].astype(np.float64)  # (d,)
    coef = w_std / sd  # (d,)
    intercept = float(clf.intercept_[0] - (w_std * mu / sd).sum())
    return coef, intercept


def _accuracy(scores: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> float:
    return float(((scores > threshold).astype(int) == y).mean())


def mean_diff_classifier(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The mass-mean direction ``mean(X[y==1]) - mean(X[y==0])`` and its midpoint threshold."""
    check(bool((y == 1).any() and (y == 0).any()), "both classes need at least one row")
    md = X[y == 1].mean(0) - X[y == 0].mean(0)  # (d,)
    threshold = 0.5 * float(X[y == 1].mean(0) @ md + X[y == 0].mean(0) @ md)
    return md, threshold


def fit_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    C: float = 1.0,
    max_iter: int = 200,
) -> ProbeResult:
    """Fit a logistic-regression probe and the mean-difference classifier; score both.

    Features are standardised for the fit (L2 penalty ``1/C`` on standardised weights); the
    returned ``coef`` is mapped back to raw activation space, so ``x @ coef + intercept`` is the
    probe's decision on raw activations and ``coef`` is the probe direction.

    Example:
        >>> r = fit_probe(Xtr, ytr, Xte, yte)             # doctest: +SKIP
        >>> r.test_accuracy, r.mean_diff_test_accuracy     # doctest: +SKIP
    """
    check(C > 0, f"C={C} must be positive (inverse regularisation strength, e.g. 1.0)")
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    coef, intercept = _logistic(X_train, y_train, C, max_iter)
    md, thr = mean_diff_classifier(X_train, y_train)
    denom = float(np.linalg.norm(coef) * np.linalg.norm(md))
    return ProbeResult(
        coef=coef,
        intercept=intercept,
        mean_diff=md,
        threshold=thr,
        train_accuracy=_accuracy(X_train @ coef + intercept, y_train),
        test_accuracy=_accuracy(X_test @ coef + intercept, y_test),
        mean_diff_train_accuracy=_accuracy(X_train @ md, y_train, thr),
        mean_diff_test_accuracy=_accuracy(X_test @ md, y_test, thr),
        test_auroc=auroc(X_test @ coef, y_test),
        mean_diff_test_auroc=auroc(X_test @ md, y_test),
        cosine=float(coef @ md) / denom if denom > 0 else 0.0,
    )


def probe_heldout(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    C: float = 1.0,
    max_iter: int = 100,
) -> tuple[float, float]:
    """Held-out ``(accuracy, cross-entropy)`` of a logistic-regression probe.

    Accuracy is the per-head score ITI ranks by; the cross-entropy (nats per row) separates
    heads whose accuracy ties, as it often does at 1.0 on small held-out sets.
    """
    coef, intercept = _logistic(np.asarray(X_train, dtype=np.float64), y_train, C, max_iter)
    scores = np.asarray(X_test, dtype=np.float64) @ coef + intercept  # (n_test,)
    # -log sigmoid(s) for positives, -log(1 - sigmoid(s)) for negatives, computed stably.
    loss = float(np.where(y_test == 1, np.logaddexp(0, -scores), np.logaddexp(0, scores)).mean())
    return _accuracy(scores, y_test), loss


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels`` (ties count one half).

    1.0 means every positive scores above every negative; 0.5 is chance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    check(pos.size > 0 and neg.size > 0, "AUROC needs at least one row of each class")
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    return float(roc_auc_score(y, np.concatenate([pos, neg])))
