"""The only place the workbench changes or reads a model's forward pass.

A hook is ``(Site, fn)``: ``fn`` receives the activation at that site and returns a replacement
tensor, or ``None`` to leave it as it is. Activations are always given in one canonical shape,
whichever path runs the model:

* ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``: ``(batch, pos, d_model)``
* ``z`` (attention head outputs before W_O): ``(batch, pos, n_heads, d_head)``

Two paths (``backend``): ``"hf"`` hooks the transformers model's decoder layers in place (the
default: every site kind, one copy of the weights, as steering-vectors and repeng do); ``"tl"``
hooks the TransformerLens model's hook points (built on demand as a second copy). Both see the
same residual basis (see :mod:`workbench.model.load`), and tests compare every site.

Every registration returns a :class:`HookHandle`; :func:`hooks_applied` is its context-manager
twin. Hooks are removed on exit and on any exception, including one raised halfway through
registering several hooks, and only the hooks added here are ever removed: hooks the user put on
the model stay.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.model.load import Model

SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
BACKENDS = ("tl", "hf")

ActFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@dataclass(frozen=True)
class Site:
    """A place in the forward pass: a kind (see ``SITE_KINDS``) at a block index."""

    kind: str
    layer: int

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise WorkbenchError(f"unknown site '{self.kind}': use one of {', '.join(SITE_KINDS)}")

    @property
    def tl_name(self) -> str:
        """The TransformerLens hook name, e.g. ``blocks.6.hook_resid_pre``."""
        if self.kind == "z":
            return f"blocks.{self.layer}.attn.hook_z"
        return f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def convention(self) -> str:
        """The layer convention in words, with the peers' numbering beside ours.

        >>> Site("resid_pre", 8).convention
        "resid_pre of layer 8: the input of block 8 (the output of block 7), transformers' hidden_states[8]; steering-vectors and repeng call it layer 7"
        """
        L = self.layer
        if self.kind == "resid_pre":
            before = f" (the output of block {L - 1})" if L > 0 else " (the embeddings)"
            peers = f"; steering-vectors and repeng call it layer {L - 1}" if L > 0 else ""
            return (
                f"resid_pre of layer {L}: the input of block {L}{before}, "
                f"transformers' hidden_states[{L}]{peers}"
            )
        if self.kind == "resid_post":
            return (
                f"resid_post of layer {L}: the output of block {L}, transformers' "
                f"hidden_states[{L + 1}]; steering-vectors and repeng call it layer {L}"
            )
        return f"{self.kind} of block {L} ({self.tl_name})"

    @classmethod
    def parse(cls, text: str, layer: int | None = None) -> Site:
        """Parse ``"resid_post"`` (with ``layer``) or a TL hook name like ``blocks.3.hook_z``."""
        m = re.fullmatch(r"blocks\.(\d+)\.(?:attn\.)?hook_(\w+)", text.strip())
        if m:
            return cls(m.group(2), int(m.group(1)))
        if layer is None:
            raise WorkbenchError(f"site '{text}' needs a layer (or use blocks.N.hook_{text})")
        return cls(text.strip(), layer)

    def check(self, model: Model) -> Site:
        """Raise a clear error if this site does not exist in ``model``."""
        model.check_layer(self.layer)
        return self


class HookHandle:
    """Handle for hooks added together; ``remove()`` takes away exactly those (idempotent)."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _add(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._handles.append(handle)

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


def default_backend(model: Model) -> str:
    """``"hf"`` when the model has a transformers twin (faster), else ``"tl"``."""
    return "hf" if model.hf is not None else "tl"


def add_hooks(
    model: Model,
    hooks: Sequence[tuple[Site, ActFn]],
    *,
    backend: str = "tl",
) -> HookHandle:
    """Register ``hooks`` on ``model``; all or nothing.

    If registering any hook fails, the ones already added are removed before the error is
    raised, so the model is never left half-hooked. (Position-dependent hooks track positions
    from their own activation's length: TransformerLens's ``generate`` calls ``forward``
    directly, so a hook on the model's root would never fire there.)
    """
    if backend not in BACKENDS:
        raise WorkbenchError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if backend == "hf" and model.hf is None:
        raise WorkbenchError(
            f"model {model.name} has no transformers twin: use backend 'tl' for it"
        )
    handle = HookHandle()
    try:
        for site, fn in hooks:
            site.check(model)
            if backend == "tl":
                handle._add(_add_tl(model, site, fn))
            else:
                for h in _add_hf(model, site, fn):
                    handle._add(h)
    except BaseException:
        handle.remove()
        raise
    return handle


@contextlib.contextmanager
def hooks_applied(
    model: Model,
    hooks: Sequence[tuple[Site, ActFn]],
    *,
    backend: str = "tl",
) -> Iterator[HookHandle]:
    """Context-manager twin of :func:`add_hooks`: hooks are removed on exit and on any error.

    Example:
        >>> with hooks_applied(model, [(Site("resid_pre", 6), lambda x: x + v)]):  # doctest: +SKIP
        ...     logits = model.tl(tokens)
    """
    handle = add_hooks(model, hooks, backend=backend)
    try:
        yield handle
    finally:
        handle.remove()


@contextlib.contextmanager
def eager_attention(model: Model) -> Iterator[None]:
    """Run the transformers model with its eager attention inside the block (the fused kernels
    do not return attention patterns); the previous implementation is restored on exit."""
    hf = model.hf
    if hf is None:
        raise WorkbenchError(f"model {model.name} has no transformers model: use backend 'tl'")
    before = getattr(hf.config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf.set_attn_implementation(before)


# The order in which sites fire inside one block, so a recording knows which fires last.
FIRING_ORDER = {
    "resid_pre": 0,
    "z": 1,
    "attn_out": 2,
    "resid_mid": 3,
    "mlp_out": 4,
    "resid_post": 5,
}


class StopForward(Exception):
    """Raised by a ``recording(..., stop=True)`` once its last site has fired.

    Catch it around the forward call: the pass ends there, so capturing layer 8 of 30 costs
    about a fifth of a full pass.
    """


@contextlib.contextmanager
def recording(
    model: Model,
    sites: Sequence[Site],
    *,
    backend: str = "tl",
    detach: bool = True,
    stop: bool = False,
) -> Iterator[dict[Site, torch.Tensor]]:
    """Record the activation at each site during the forward passes run inside the block.

    The yielded dict maps each site to its latest activation (canonical shape). Nothing is
    changed in the forward pass. With ``stop``, :class:`StopForward` is raised right after the
    last site fires, ending the pass early; the caller catches it.
    """
    store: dict[Site, torch.Tensor] = {}
    unique = list(dict.fromkeys(sites))

    def keep(site: Site) -> ActFn:
        def fn(act: torch.Tensor) -> None:
            store[site] = act.detach() if detach else act

        return fn

    def halt(_act: torch.Tensor) -> None:
        raise StopForward

    hooks = [(s, keep(s)) for s in unique]
    if stop and unique:
        # Registered after the recording hook on the same site, so it runs after it.
        hooks.append((max(unique, key=lambda s: (s.layer, FIRING_ORDER[s.kind])), halt))
    with hooks_applied(model, hooks, backend=backend):
        yield store


# --------------------------------------------------------------------------- TransformerLens path


def _add_tl(model: Model, site: Site, fn: ActFn) -> torch.utils.hooks.RemovableHandle:
    point = model.tl.hook_dict.get(site.tl_name)
    if point is None:
        raise WorkbenchError(
            f"site {site.kind} at layer {site.layer} does not exist in {model.name}"
        )

    # A HookPoint is an identity module, so a torch forward hook on it that returns a tensor
    # replaces the activation. Registering directly (not via TL's add_hook) keeps our handles
    # separate from TransformerLens's own list, which the user may reset.
    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        return fn(output)

    return point.register_forward_hook(hook)


# --------------------------------------------------------------------------- transformers path


def hf_layers(hf: Any) -> Any:
    """The list of decoder blocks of a transformers causal LM."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise WorkbenchError(
        f"cannot find the decoder layers of {type(hf).__name__}: use backend 'tl' for this model"
    )


def _first_child(module: Any, names: Sequence[str], what: str) -> Any:
    for name in names:
        child = getattr(module, name, None)
        if child is not None:
            return child
    raise WorkbenchError(
        f"cannot find the {what} module in {type(module).__name__}: use backend 'tl'"
    )


def _replace_first(output: Any, new: torch.Tensor | None) -> Any:
    if new is None:
        return None
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def _branch_ends(layer: Any) -> tuple[Any, Any]:
    """The modules whose outputs a block adds to its residual stream: ``(attention, MLP)``.

    Gemma 2/3 blocks normalise each branch before adding it (``post_attention_layernorm``,
    ``post_feedforward_layernorm``), as TransformerLens's ``hook_attn_out``/``hook_mlp_out``
    do (they capture the additive contribution); other blocks add the attention and MLP outputs
    themselves.
    """
    if getattr(layer, "post_feedforward_layernorm", None) is not None:
        return layer.post_attention_layernorm, layer.post_feedforward_layernorm
    attn = _first_child(layer, ("self_attn", "attn", "attention"), "attention")
    mlp = _first_child(layer, ("mlp", "feed_forward"), "MLP")
    return attn, mlp


def _add_hf(model: Model, site: Site, fn: ActFn) -> list[torch.utils.hooks.RemovableHandle]:
    layer = hf_layers(model.hf)[site.layer]
    if site.kind == "resid_pre":

        def pre(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # Decoder layers take hidden_states positionally or by keyword depending on version.
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return [layer.register_forward_pre_hook(pre, with_kwargs=True)]

    if site.kind == "z":
        attn = _first_child(layer, ("self_attn", "attn", "attention"), "attention")
        out_proj = _first_child(attn, ("o_proj", "c_proj", "dense", "out_proj"), "output proj")
        n_heads, d_head = model.n_heads, model.d_head

        def pre_z(_m: Any, args: tuple[Any, ...]) -> Any:
            flat = args[0]  # (batch, pos, n_heads * d_head)
            z = flat.view(*flat.shape[:-1], n_heads, d_head)  # (batch, pos, n_heads, d_head)
            new = fn(z)
            return None if new is None else (new.reshape(flat.shape), *args[1:])

        return [out_proj.register_forward_pre_hook(pre_z)]

    attn_end, mlp_end = _branch_ends(layer)
    if site.kind == "resid_mid":
        return _add_hf_resid_mid(model, layer, attn_end, fn)
    module = {"resid_post": layer, "attn_out": attn_end, "mlp_out": mlp_end}[site.kind]

    def post(_m: Any, _inputs: Any, output: Any) -> Any:
        first = output[0] if isinstance(output, tuple) else output
        return _replace_first(output, fn(first))

    return [module.register_forward_hook(post)]


def _add_hf_resid_mid(
    model: Model, layer: Any, attn_end: Any, fn: ActFn
) -> list[torch.utils.hooks.RemovableHandle]:
    """``resid_mid`` (the residual between the attention and MLP branches) on transformers.

    transformers keeps it in a local variable, so it is rebuilt as ``resid_pre + attention
    branch``: the block's input is remembered by a pre-hook, and a hook on the attention
    branch's last module sees ``resid_mid`` and, to change it, changes the branch's output by
    the same difference (the MLP and every later layer then see the new ``resid_mid``).
    """
    if getattr(getattr(model.hf, "config", None), "use_parallel_residual", False):
        raise WorkbenchError(
            f"{model.name} runs attention and MLP in parallel, so it has no resid_mid; "
            "use resid_pre or resid_post"
        )
    seen: dict[str, torch.Tensor] = {}

    def remember(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["pre"] = args[0] if args else kwargs["hidden_states"]

    def post(_m: Any, _inputs: Any, output: Any) -> Any:
        branch = output[0] if isinstance(output, tuple) else output  # (batch, pos, d_model)
        mid = seen.pop("pre") + branch  # (batch, pos, d_model)
        new = fn(mid)
        return None if new is None else _replace_first(output, branch + (new - mid))

    return [
        layer.register_forward_pre_hook(remember, with_kwargs=True),
        attn_end.register_forward_hook(post),
    ]
