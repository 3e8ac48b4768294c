"""Text measures of steered completions: target words, degeneration and sentiment.

Pure functions over generated strings (no model): "wedding words per completion" as in ActAdd,
distinct-n and repetition rate for degeneration, and VADER sentiment.

>>> distinct_n(["a b a b"], n=2).pooled
0.6666666666666666
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from workbench.errors import WorkbenchError, check

__all__ = [
    "WEDDING_WORDS",
    "DistinctN",
    "distinct_n",
    "repetition_rate",
    "sentiment",
    "target_word_rate",
]

# The words ActAdd counted as "wedding related" (footnote 28 of the post).
WEDDING_WORDS: tuple[str, ...] = (
    "wedding",
    "weddings",
    "wed",
    "marry",
    "married",
    "marriage",
    "bride",
    "groom",
    "honeymoon",
)


def _texts(texts: Sequence[str], fn: str) -> list[str]:
    check(
        not isinstance(texts, str),
        f"{fn} takes a list of texts, got one string; wrap it as [text]",
    )
    out = list(texts)
    check(len(out) > 0, f"{fn} got no texts; pass at least one completion")
    check(all(isinstance(t, str) for t in out), f"{fn} takes strings only")
    return out


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    # Lowercased whitespace words: "The" and "the" are the same word for degeneration purposes;
    # punctuation stays attached, as in the usual distinct-n implementations.
    words = text.lower().split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


@dataclass(frozen=True)
class DistinctN:
    """Distinct-n per text and pooled over all texts (see :func:`distinct_n`)."""

    n: int
    per_text: list[float]
    pooled: float

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return {"n": self.n, "per_text": list(self.per_text), "pooled": self.pooled}


def distinct_n(texts: Sequence[str], n: int = 2) -> DistinctN:
    """Unique n-grams / total n-grams over lowercased whitespace words.

    ``per_text`` scores each text alone; ``pooled`` counts unique n-grams across all texts
    against all n-grams, so completions that repeat each other also lower it (mode collapse at a
    large coefficient). A text with fewer than ``n`` words has no n-grams and scores 0.0: an empty
    completion counts as degenerate, which is what a damage measure should say.

    >>> d = distinct_n(["the cat the cat", "a dog"], n=2)
    >>> d.per_text, d.pooled
    ([0.6666666666666666, 1.0], 0.75)
    """
    check(n >= 1, f"n must be >= 1, got {n}")
    items = _texts(texts, "distinct_n")
    grams = [_ngrams(t, n) for t in items]
    per_text = [len(set(g)) / len(g) if g else 0.0 for g in grams]
    total = sum(len(g) for g in grams)
    unique = len({gram for g in grams for gram in g})
    return DistinctN(n=n, per_text=per_text, pooled=unique / total if total else 0.0)


def repetition_rate(text: str, n: int = 4) -> float:
    """Fraction of the text's n-grams that repeat an earlier n-gram (seq-rep-n).

    This is Welleck et al.'s (2019) seq-rep-n, ``1 - distinct_n`` of one text; with ``n=4`` it
    catches looping ("I love you. I love you. I love you."). Texts shorter than ``n`` words
    repeat nothing and score 0.0.

    >>> repetition_rate("a b c d a b c d", n=4)
    0.2
    """
    check(isinstance(text, str), "repetition_rate takes one text; map it over a list")
    check(n >= 1, f"n must be >= 1, got {n}")
    grams = _ngrams(text, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


@lru_cache(maxsize=64)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so a phrase wins over a word it starts with; whitespace inside a phrase
    # matches any run of whitespace.
    alternatives = sorted((r"\s+".join(map(re.escape, w.split())) for w in words), key=len)
    return re.compile(r"\b(?:" + "|".join(reversed(alternatives)) + r")\b", re.IGNORECASE)


def target_word_rate(text: str, words: Sequence[str]) -> int:
    """How many target words one completion contains (ActAdd's "wedding words per completion").

    Matches whole words, case-insensitively, with no stemming: list every form you want
    counted, as ActAdd did (:data:`WEDDING_WORDS`). "wedding" does not match inside "weddings"
    or "prewedding"; it does match in "wedding's". Entries with spaces match as phrases.
    Average the counts over completions with :func:`workbench.measure.stats.estimate`.

    >>> target_word_rate("The bride and groom: a Wedding to remember.", WEDDING_WORDS)
    3
    """
    check(isinstance(text, str), "target_word_rate takes one text; map it over a list")
    check(
        not isinstance(words, str),
        f"words must be a list of words, not one string; write [{words!r}]",
    )
    cleaned = tuple(sorted({w.strip().lower() for w in words}))
    check(len(cleaned) > 0, "the target word list is empty; pass the words to count")
    check(all(cleaned), "the target word list contains an empty word; remove it")
    return len(_word_pattern(cleaned).findall(text))


@lru_cache(maxsize=1)
def _vader() -> Any:
    # Imported lazily so the rest of the workbench loads without it; building the analyser
    # parses the lexicon, so it is done once.
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise WorkbenchError(
            "sentiment needs the vaderSentiment package; install it with pip install vaderSentiment"
        ) from exc
    return SentimentIntensityAnalyzer()


def sentiment(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment per text, in ``[-1, 1]`` (positive means positive).

    >>> [s > 0 for s in sentiment(["I love you", "I hate you"])]
    [True, False]
    """
    analyser = _vader()
    return [float(analyser.polarity_scores(t)["compound"]) for t in _texts(texts, "sentiment")]
