"""What to measure and on which texts: target words, text sets, conditions, the effect.

Inputs of :mod:`workbench.measure.effects`: :class:`MeasureSpec` (prompts, target words, on-/off-target
and neutral text sets, samples per prompt, sampling), :class:`EffectSpec` (which measure is the
effect and which way is better), :class:`Condition` (one coefficient per plan entry, or a
steering prompt put in front: the token-injection baseline) and the vector helpers sweeps use
(:func:`vector_at_layer`, :func:`injection_text`). Every user mistake (an empty file, a target
word that tokenizes to nothing) is a one-line :class:`~workbench.errors.WorkbenchError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.corpora import load_text_set
from workbench.errors import check
from workbench.model.load import Model
from workbench.parse import integer, number
from workbench.steer.sampling import ACTADD_SAMPLING, Sampling
from workbench.vectors.build import mean_residual_norms, rebuild
from workbench.vectors.vector import SteeringVector

DEFAULT_PROMPTS = "builtin:neutral_prompts"
DEFAULT_OFF_TARGET = "builtin:unrelated"
DEFAULT_NEUTRAL = "builtin:neutral_prompts"
EFFECT_KINDS = ("target_words", "target_logprob", "sentiment", "on_target")
REBUILDABLE = ("prompt_pair", "mean_diff", "probe", "random")

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Targets:
    """Target words and the next-token ids that stand for them (first token of ``" word"``)."""

    name: str
    words: tuple[str, ...]
    ids: tuple[int, ...]
    tokens: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "words": list(self.words), "tokens": list(self.tokens)}


def parse_words(text: str | Sequence[str], what: str = "--target-words") -> tuple[str, ...]:
    """``"wedding, bride"`` or a list -> ``("wedding", "bride")``; refuses an empty list."""
    items = text.split(",") if isinstance(text, str) else list(text)
    words = tuple(w.strip() for w in items if w.strip())
    check(len(words) > 0, f"{what} is empty; give comma-separated words, e.g. wedding,bride")
    return words


def target_set(model: Model, words: Sequence[str], name: str = "target") -> Targets:
    """Token ids for ``words``: the first token of ``" word"`` and of ``" Word"``.

    A word whose tokenization is empty (nothing the tokenizer can represent) is an error that
    names the word. Multi-token words are represented by their first token; the tokens used are
    kept in :attr:`Targets.tokens` so reports show what was measured.
    """
    ws = parse_words(list(words))
    ids: list[int] = []
    for w in ws:
        found = False
        for variant in (f" {w}", f" {w[:1].upper()}{w[1:]}"):
            toks = list(model.tokenizer(variant, add_special_tokens=False)["input_ids"])
            toks = [t for t in toks if model.tokenizer.decode([t]).strip()]
            if toks:
                found = True
                if toks[0] not in ids:
                    ids.append(int(toks[0]))
        check(found, f"target word {w!r} tokenizes to nothing with {model.name}; use real words")
    tokens = tuple(model.tokenizer.decode([t]) for t in ids)
    return Targets(name=name, words=ws, ids=tuple(ids), tokens=tokens)


@dataclass(frozen=True)
class Condition:
    """One way to run the model: a coefficient per plan entry, or a prompt put in front.

    ``inject`` (with all coefficients 0) is the token-injection baseline: the steering prompt is
    put in front of every text instead of adding the vector.
    """

    label: str
    coeffs: tuple[float, ...]
    inject: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.inject is None and all(c == 0 for c in self.coeffs)


def actadd_sampling(max_new_tokens: int = 24, seed: int = 0) -> Sampling:
    """ActAdd's sampling settings (temperature 1, top-p 0.3, frequency penalty 1)."""
    return replace(ACTADD_SAMPLING, max_new_tokens=max_new_tokens, seed=seed)


@dataclass
class MeasureSpec:
    """What to measure and on which texts (see module docstring). Empty sets are skipped.

    ``n`` completions of each prompt (0: none, scoring only); ``max_tokens`` cuts scored
    sentences; batch sizes bound memory (scoring rows hold ``pos x vocab`` logits).
    """

    prompts: list[str] = field(default_factory=list)
    targets: list[Targets] = field(default_factory=list)
    sentiment: bool = False
    on_target: list[str] = field(default_factory=list)
    off_target: list[str] = field(default_factory=list)
    neutral: list[str] = field(default_factory=list)
    n: int = 0
    sampling: Sampling = field(default_factory=lambda: actadd_sampling(24))
    kl_top_k: int = 10
    max_tokens: int = 64
    batch_size: int = 32
    gen_batch_size: int = 64
    boot_seed: int = 0

    def __post_init__(self) -> None:
        check(self.n >= 0, f"samples per prompt must be >= 0, got {self.n}")
        check(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        check(self.gen_batch_size >= 1, f"batch size must be at least 1, got {self.gen_batch_size}")
        check(self.kl_top_k >= 1, f"kl_top_k must be at least 1, got {self.kl_top_k}")
        if self.n > 0 or self.targets:
            check(len(self.prompts) > 0, "no prompts to continue; give a prompt file")
        for t in self.prompts:
            check(isinstance(t, str) and bool(t.strip()), "a prompt is empty; remove it")
        if self.on_target and self.off_target:
            check(
                set(self.on_target) != set(self.off_target),
                "the on-target and off-target sentences are the same; specificity compares "
                "them: give unrelated text as --off-target",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "n_prompts": len(self.prompts),
            "targets": [t.to_json() for t in self.targets],
            "sentiment": self.sentiment,
            "n_on_target": len(self.on_target),
            "n_off_target": len(self.off_target),
            "n_neutral": len(self.neutral),
            "samples_per_prompt": self.n,
            "sampling": self.sampling.to_json(),
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True)
class EffectSpec:
    """Which measure is *the* effect, and which way is better.

    ``kind``: ``target_words`` (words per sampled completion), ``target_logprob`` (next-token
    log-prob shift of the targets), ``sentiment`` (VADER of completions) or ``on_target``
    (per-sentence perplexity ratio on on-target text, lower is better).
    """

    kind: str
    target: str = "target"
    direction: int = 1

    def __post_init__(self) -> None:
        check(self.kind in EFFECT_KINDS, f"unknown effect '{self.kind}': use {EFFECT_KINDS}")
        check(self.direction in (1, -1), f"direction must be 1 or -1, got {self.direction}")

    @property
    def key(self) -> str:
        """The measure's name in :attr:`ConditionResult.rows`."""
        return {
            "target_words": f"target_words:{self.target}",
            "target_logprob": f"target_logprob_shift:{self.target}",
            "sentiment": "sentiment",
            "on_target": "on_target_ratio",
        }[self.kind]

    @property
    def label(self) -> str:
        return {
            "target_words": "target words per completion",
            "target_logprob": "target log-prob shift (nats)",
            "sentiment": "sentiment (VADER)",
            "on_target": "on-target perplexity ratio",
        }[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "measure": self.key,
            "label": self.label,
            "direction": self.direction,
        }


def default_effect(
    spec: MeasureSpec, kind: str | None = None, decrease: bool = False
) -> EffectSpec:
    """The effect measure: ``kind`` if given, else the first available of target words
    (sampled), target log-prob (no samples), sentiment, on-target perplexity. ``decrease``:
    the wanted effect lowers the measure (always so for on-target perplexity)."""
    available = []
    if spec.targets:
        available += ["target_words"] if spec.n > 0 else []
        available += ["target_logprob"]
    if spec.sentiment and spec.n > 0:
        available.append("sentiment")
    if spec.on_target:
        available.append("on_target")
    check(
        len(available) > 0,
        "no effect measure: give --target-words W,..., --score sentiment (with --n > 0) or "
        "--on-target FILE",
    )
    if kind is None:
        kind = available[0]
    check(kind in available, f"effect '{kind}' is not measured here; available: {available}")
    # Lower on-target perplexity is the wanted effect; ``decrease`` says the same of the others
    # (e.g. less positive sentiment).
    direction = -1 if (kind == "on_target" or decrease) else 1
    return EffectSpec(kind, spec.targets[0].name if spec.targets else "target", direction)


# --------------------------------------------------------------------------- vectors


def vector_at_layer(
    model: Model, vector: SteeringVector, layer: int
) -> tuple[SteeringVector, str | None]:
    """``vector`` at ``layer``: its own tensor, rebuilt from its recipe, or moved (with a note).

    Layer sweeps rebuild the vector at each layer as ActAdd does; vectors tied to where they were
    found (dictionary components, SAE features, ITI heads) are moved unchanged and say so.
    """
    model.check_layer(layer)
    if layer in vector.directions:
        return vector.at_layers([layer]), None
    if vector.method in REBUILDABLE:
        return rebuild(vector, model, layer), None
    check(
        len(vector.layers) == 1,
        f"a {vector.method} vector with layers {vector.layers} cannot be moved to layer {layer}; "
        "give one of its layers",
    )
    moved = vector.moved_to(layer)
    norms = {**moved.layer_norms, **mean_residual_norms(model, [layer], vector.site)}
    note = (
        f"a {vector.method} vector cannot be rebuilt at another layer; its layer-"
        f"{vector.layers[0]} tensor was added at layer {layer} unchanged"
    )
    return replace(moved, layer_norms=norms), note


def injection_text(vector: SteeringVector) -> str | None:
    """The steering prompt of a prompt-made vector (its first positive prompt), else None."""
    if vector.method != "prompt_pair":
        return None
    pos = vector.recipe.get("pos")
    if isinstance(pos, list) and pos and isinstance(pos[0], str):
        return pos[0]
    return pos if isinstance(pos, str) else None


# --------------------------------------------------------------------------- from options


def build_spec(args: Any, targets: list[Targets], *, sentiment: bool) -> MeasureSpec:
    """The :class:`MeasureSpec` the text options describe.

    ``args`` holds the options as typed (strings or numbers): ``prompts``, ``n_prompts``,
    ``on_target``, ``off_target``, ``n_sentences``, ``neutral``, ``n_neutral``, ``n``,
    ``max_new_tokens``, ``seed``, ``temperature``, ``top_p``, ``freq_penalty``, ``batch_size``
    (the ``argparse.Namespace`` of ``workbench sweep``/``measure``/``compose``, or the
    dashboard's fields in one).
    """
    n_sent = integer(args.n_sentences, "--n-sentences", 1)
    n = integer(args.n, "--n", 0)
    settings = Sampling(
        max_new_tokens=integer(args.max_new_tokens, "--max-new-tokens", 1),
        temperature=number(args.temperature, "--temperature"),
        top_p=number(args.top_p, "--top-p"),
        freq_penalty=number(args.freq_penalty, "--freq-penalty"),
        seed=integer(args.seed, "--seed", 0),
    )
    n_prompts = integer(args.n_prompts, "--n-prompts", 1)
    need_prompts = n > 0 or bool(targets)
    return MeasureSpec(
        prompts=load_text_set(args.prompts, "--prompts", n_prompts) if need_prompts else [],
        targets=targets,
        sentiment=sentiment,
        on_target=load_text_set(args.on_target, "--on-target", n_sent) if args.on_target else [],
        off_target=load_text_set(args.off_target, "--off-target", n_sent)
        if args.off_target
        else [],
        neutral=load_text_set(args.neutral, "--neutral", integer(args.n_neutral, "--n-neutral", 1)),
        n=n,
        sampling=settings,
        batch_size=integer(args.batch_size, "--batch-size", 1),
        boot_seed=settings.seed,
    )
