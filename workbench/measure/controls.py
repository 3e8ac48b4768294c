"""Matched controls and the specificity of an effect.

A perplexity ratio alone misleads: on SmolLM2-135M ActAdd's ``" wedding" - " "`` lowers the
perplexity of unrelated sentences about as much as of wedding sentences, because most of what it
does is replace a stray space prefix with *a* word, any word. So every measurement asks two
questions against controls built the same way:

* **Matched controls** (:func:`matched_controls`). For a prompt-pair vector: ``k`` vectors from
  control words drawn (seeded, recorded) from :data:`CONTROL_WORDS`, each put in place of the
  positive prompt with the same form (leading space, capital, token count where possible) and
  the same negative prompt, layer, site, position and coefficient units. For every other vector:
  ``k`` norm-matched random vectors. Words that occur in the texts measured on are never drawn,
  so a control cannot look generic merely because it names the off-target topic.
* **Specificity** (:func:`specificity`): how much more the vector lowers on-target than
  off-target perplexity, ``mean log(off-target ratio) - mean log(on-target ratio)`` over
  sentences (positive = specific, in nats per token), with a two-sample bootstrap interval over
  sentences; and the same for each control.
* **Against the controls** (:func:`against_controls`): the vector's rank among its controls and
  a one-sided permutation p-value (sentence-wise relabelling of the vector among its controls)
  of "the vector is more specific than its controls", and a sentence in words.

>>> specificity([0.5, 0.5], [1.0, 1.0]).value > 0
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import check
from workbench.measure.stats import Estimate
from workbench.model.load import Model
from workbench.vectors.build import random_like
from workbench.vectors.prompts import from_prompts
from workbench.vectors.vector import SteeringVector

__all__ = [
    "CONTROL_WORDS",
    "DEFAULT_CONTROLS",
    "Control",
    "ControlComparison",
    "against_controls",
    "check_controls",
    "matched_controls",
    "specificity",
]

# Concrete, everyday words from many unrelated domains: no emotions, no ceremonies, nothing a
# typical steering target is about. Fixed, so a run's controls are reproducible from its seed.
CONTROL_WORDS: tuple[str, ...] = (
    "shipping", "garden", "piano", "volcano", "tax", "engine", "river", "bicycle",
    "library", "kitchen", "mountain", "football", "computer", "election", "winter", "hospital",
    "coffee", "island", "factory", "chemistry", "violin", "desert", "railway", "museum",
    "harvest", "banking", "satellite", "carpet", "tunnel", "fishing", "printer", "weather",
    "cotton", "pencil", "bridge", "airport", "planet", "farming", "furniture", "geology",
)  # fmt: skip
DEFAULT_CONTROLS = 8
ALPHA = 0.05


def check_controls(k: int) -> int:
    """``k`` if it is a usable number of controls, else a one-line error."""
    check(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0,
        f"--controls must be a whole number >= 0 (0 switches controls off), got {k!r}",
    )
    check(
        k <= len(CONTROL_WORDS),
        f"--controls {k} is more than the {len(CONTROL_WORDS)} built-in control words; "
        f"use at most {len(CONTROL_WORDS)}",
    )
    return k


# --------------------------------------------------------------------------- control vectors


@dataclass(frozen=True)
class Control:
    """One control vector: built from a control word, or a norm-matched random draw."""

    label: str
    kind: str  # "word" | "random"
    vector: SteeringVector
    prompt: str | None = None
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def _pairs(vector: SteeringVector) -> tuple[list[str], list[str]] | None:
    """The positive and negative prompts of a prompt-pair vector, else None."""
    if vector.method != "prompt_pair":
        return None
    lists: list[list[str]] = []
    for key in ("pos", "neg"):
        v = vector.recipe.get(key)
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            return None
        lists.append([str(x) for x in items])
    pos, neg = lists
    return (pos, neg) if len(pos) == len(neg) else None


def _in_form_of(word: str, prompt: str) -> str:
    """``word`` written like ``prompt``: its leading whitespace and initial capital."""
    lead = prompt[: len(prompt) - len(prompt.lstrip())]
    body = prompt.strip()
    w = word[:1].upper() + word[1:] if body[:1].isupper() else word
    return lead + w


def _n_tokens(model: Model, text: str) -> int:
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def _words_in(texts: Sequence[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}


def _occurs(word: str, words: set[str]) -> bool:
    """Whether ``word`` or a form of it (``weddings`` for ``wedding``, ``farm`` for
    ``farming``) is among ``words``."""
    return any(t.startswith(word) or (len(t) >= 4 and word.startswith(t)) for t in words)


def _draw_words(
    model: Model, prompt: str, k: int, seed: int, avoid: set[str]
) -> tuple[list[str], str | None]:
    """``k`` control words for ``prompt`` (seeded); those with its token count first."""
    usable = [w for w in CONTROL_WORDS if not _occurs(w, avoid)]
    check(
        len(usable) >= k,
        f"only {len(usable)} control words do not occur in the measured texts; use --controls "
        f"{len(usable)} or fewer",
    )
    rng = np.random.default_rng(seed)
    order = [usable[i] for i in rng.permutation(len(usable))]
    want = _n_tokens(model, prompt)
    same = [w for w in order if _n_tokens(model, _in_form_of(w, prompt)) == want]
    note = None
    if len(same) < k:
        note = (
            f"only {len(same)} control words have the {want} tokens of {prompt!r}; the others "
            "differ in length (front-aligned like the vector)"
        )
    picked = same[:k] + [w for w in order if w not in same][: k - len(same[:k])]
    return picked, note


def matched_controls(
    model: Model,
    vector: SteeringVector,
    layer: int,
    k: int,
    *,
    seed: int = 0,
    texts: Sequence[str] = (),
    avoid: Sequence[str] = (),
) -> tuple[list[Control], list[str]]:
    """``k`` controls for ``vector`` at ``layer`` and notes on how they were matched.

    Prompt-pair vectors get control-word vectors (same negative prompt, site and layer; the
    positive prompt's form); other vectors get norm-matched random vectors with seeds
    ``seed, seed + 1, ...``. Words occurring in ``texts`` (the sentences and prompts measured)
    or in ``avoid`` (target words), or in the vector's own positive prompt, are not drawn.
    """
    check_controls(k)
    if k == 0:
        return [], []
    pairs = _pairs(vector)
    if pairs is None:
        at = vector.at_layers([layer])
        return [
            Control(f"random #{seed + i}", "random", random_like(at, seed + i), seed=seed + i)
            for i in range(k)
        ], []
    pos, neg = pairs
    taken = _words_in([*texts, *pos, *avoid])
    words, note = _draw_words(model, pos[0], k, seed, taken)
    site = str(vector.recipe.get("site", vector.site))
    out = []
    for w in words:
        forms = [_in_form_of(w, p) for p in pos]
        vec = from_prompts(model, forms, neg, [layer], site)
        out.append(Control(f"{forms[0]!r}", "word", vec, prompt=forms[0], seed=seed))
    notes = [note] if note else []
    if any(len(p.split()) > 1 for p in pos):
        notes.append("the multi-word positive prompt was replaced by one control word")
    return out, notes


# --------------------------------------------------------------------------- specificity


def _logs(ratios: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(ratios, dtype=np.float64).reshape(-1)  # (n,)
    check(arr.size > 0, f"no {what} sentences: specificity needs on- and off-target text")
    check(bool(np.all(arr > 0) & np.all(np.isfinite(arr))), f"{what} ratios are not positive")
    return np.log(arr)


def specificity(
    on_ratio: Sequence[float] | np.ndarray,
    off_ratio: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Estimate:
    """``mean log(off-target ratio) - mean log(on-target ratio)`` with a bootstrap interval.

    Ratios are per-sentence perplexity ratios, steered / unsteered. Positive: the vector lowers
    on-target perplexity more than off-target (nats per token). The interval resamples the two
    sentence sets independently; ``n`` is the number of on-target sentences.

    >>> specificity([1.0, 1.0], [1.0, 1.0]).value
    0.0
    """
    on, off = _logs(on_ratio, "on-target"), _logs(off_ratio, "off-target")
    value = float(off.mean() - on.mean())
    if on.size == 1 and off.size == 1:
        return Estimate(value, value, value, 1)
    rng = np.random.default_rng(seed)
    on_b = on[rng.integers(0, on.size, (n_boot, on.size))].mean(1)  # (n_boot,)
    off_b = off[rng.integers(0, off.size, (n_boot, off.size))].mean(1)  # (n_boot,)
    low, high = np.quantile(off_b - on_b, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, min(float(low), value), max(float(high), value), int(on.size))


def _permutation_p(on: np.ndarray, off: np.ndarray, n_perm: int, seed: int) -> float:
    """One-sided p-value that row 0 (the vector) is more specific than rows 1.. (controls).

    ``on``/``off``: ``(1 + k, n_sentences)`` log ratios. Statistic: the vector's specificity
    minus the controls' mean. Under the null the vector is exchangeable with its controls on
    every sentence, so each permutation relabels, sentence by sentence, which row is "the
    vector".
    """
    k1 = on.shape[0]

    def stat(on_pick: np.ndarray, off_pick: np.ndarray) -> np.ndarray:
        # picked row's mean log ratio vs the others' mean, per permutation
        on_t, off_t = on.sum(0), off.sum(0)  # (n,)
        on_rest = (on_t[None] - on_pick) / (k1 - 1)  # (n_perm, n_on)
        off_rest = (off_t[None] - off_pick) / (k1 - 1)  # (n_perm, n_off)
        return (off_pick.mean(1) - on_pick.mean(1)) - (off_rest.mean(1) - on_rest.mean(1))

    observed = float(stat(on[0][None], off[0][None])[0])
    rng = np.random.default_rng(seed)
    j_on = rng.integers(0, k1, (n_perm, on.shape[1]))  # (n_perm, n_on)
    j_off = rng.integers(0, k1, (n_perm, off.shape[1]))  # (n_perm, n_off)
    on_pick = on[j_on, np.arange(on.shape[1])]  # (n_perm, n_on): the picked row's values
    off_pick = off[j_off, np.arange(off.shape[1])]  # (n_perm, n_off)
    perm = stat(on_pick, off_pick)  # (n_perm,)
    return float((1 + np.sum(perm >= observed - 1e-12)) / (n_perm + 1))


@dataclass(frozen=True)
class ControlComparison:
    """A vector's specificity against its controls' (see :func:`against_controls`)."""

    specificity: Estimate
    control_specificity: list[float]
    beats: int  # controls the vector is more specific than
    p_value: float | None  # one-sided permutation p-value; None without controls
    status: str  # "specific" | "generic" | "reverse"
    verdict: str

    def to_json(self) -> dict[str, Any]:
        s = self.specificity
        return {
            "specificity": s.value,
            "specificity_ci": [s.low, s.high],
            "control_specificity": self.control_specificity,
            "beats_controls": self.beats,
            "n_controls": len(self.control_specificity),
            "p_value": self.p_value,
            "status": self.status,
            "verdict": self.verdict,
        }


def against_controls(
    on_ratio: np.ndarray,
    off_ratio: np.ndarray,
    control_on: Sequence[np.ndarray],
    control_off: Sequence[np.ndarray],
    *,
    kind: str = "control",
    seed: int = 0,
    n_perm: int = 2000,
) -> ControlComparison:
    """Specificity of a vector and of its controls; rank, permutation p-value and verdict.

    ``on_ratio``/``off_ratio``: the vector's per-sentence perplexity ratios; ``control_on`` /
    ``control_off``: the same for each control (same sentences). With controls the effect is
    *specific* when the vector is more specific than its controls (p < 0.05), else *generic*;
    without controls, *specific* / *reverse* / *generic* as its interval is above, below or
    around 0.
    """
    check(len(control_on) == len(control_off), "one on- and one off-target row per control")
    spec = specificity(on_ratio, off_ratio, seed=seed)
    ctrl = [
        specificity(a, b, seed=seed).value for a, b in zip(control_on, control_off, strict=True)
    ]
    beats = sum(spec.value > c for c in ctrl)
    p = None
    if ctrl:
        on = np.stack([_logs(on_ratio, "on-target")] + [_logs(c, "on-target") for c in control_on])
        off = np.stack(
            [_logs(off_ratio, "off-target")] + [_logs(c, "off-target") for c in control_off]
        )
        p = _permutation_p(on, off, n_perm, seed)
    status = _status(spec, p)
    return ControlComparison(
        spec, ctrl, beats, p, status, _verdict(status, spec, ctrl, beats, p, kind)
    )


def _status(spec: Estimate, p: float | None) -> str:
    """With controls: specific when the vector is more specific than its controls (p < 0.05),
    else generic. Without: by the sign of the specificity interval."""
    if p is not None:
        return "specific" if p < ALPHA else "generic"
    if spec.low > 0:
        return "specific"
    return "reverse" if spec.high < 0 else "generic"


def _verdict(
    status: str, spec: Estimate, ctrl: list[float], beats: int, p: float | None, kind: str
) -> str:
    """One sentence: the status, what the vector does, how it ranks among its controls."""
    if spec.high < 0:
        what = "lowers off-target perplexity more than on-target"
    elif spec.low > 0:
        what = "lowers on-target perplexity more than off-target"
    else:
        what = "its on- and off-target perplexity changes differ by no more than noise"
    text = f"{status}: {what} (specificity {spec.value:+.3f} [{spec.low:+.3f}, {spec.high:+.3f}])"
    if not ctrl or p is None:
        return text + "; no controls were run"
    return text + (
        f"; more specific than {beats} of {len(ctrl)} {kind} vectors (their median "
        f"{float(np.median(ctrl)):+.3f}, permutation p = {p:.3g})"
    )
