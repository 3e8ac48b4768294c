"""Labels a person can read: what a candidate makes the model write, and where it lives.

A candidate's label is built from behaviour, not from its raw tokens:

1. **contrastive words** (:func:`contrastive_words`): the words whose count rises most in its
   steered sampled completions over the unsteered completions of the same prompts under the same
   noise (so the two sets differ only by the vector);
2. its **top document** (the start of the document where its code is highest, for its sign).

Logit-lens tokens stay in the candidate's JSON as secondary evidence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
# Function words say nothing about a direction; they are never contrastive words.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "one",
        "two",
        "also",
        "may",
        "might",
        "must",
        "shall",
        "us",
        "it's",
        "i'm",
        "don't",
        "can't",
    ]
)


def words(text: str) -> list[str]:
    """Lower-cased content words of ``text`` (no stop words, at least two letters)."""
    return [w for w in (m.group(0).lower() for m in WORD.finditer(text)) if w not in STOPWORDS]


def contrastive_words(
    steered: Sequence[str], unsteered: Sequence[str], n: int = 5, min_count: int = 2
) -> list[str]:
    """Up to ``n`` words that rise most in ``steered`` over ``unsteered`` completions.

    A word qualifies when it occurs at least ``min_count`` times in the steered texts and more
    often than in the unsteered ones; words are ranked by the count difference, then by the
    smoothed ratio ``(steered + 1) / (unsteered + 1)``.

    >>> contrastive_words(["the wedding cake", "a wedding dress"], ["the cake", "a car"])
    ['wedding']
    """
    s = Counter(w for t in steered for w in words(t))
    u = Counter(w for t in unsteered for w in words(t))
    rising = [w for w, c in s.items() if c >= min_count and c > u[w]]
    rising.sort(key=lambda w: (-(s[w] - u[w]), -(s[w] + 1) / (u[w] + 1), w))
    return rising[:n]


def short(text: str, n_words: int = 8) -> str:
    """The first ``n_words`` words of ``text`` (with ``…`` when cut)."""
    parts = text.split()
    return " ".join(parts[:n_words]) + (" …" if len(parts) > n_words else "")


def candidate_label(
    name: str, contrastive: Sequence[str], top_doc: str | None, fallback: Sequence[str]
) -> str:
    """``"+c003: wedding, bride, vows | doc: The bride walked slowly …"``.

    ``fallback`` (e.g. promoted next tokens) stands in when no word rose in the completions.
    """
    head = ", ".join(contrastive[:3]) if contrastive else "no new words"
    if not contrastive and fallback:
        head += " (tokens: " + ", ".join(t.strip() or repr(t) for t in fallback[:3]) + ")"
    tail = f" | doc: {short(top_doc)}" if top_doc else ""
    return f"{name}: {head}{tail}"
