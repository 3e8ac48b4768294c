"""Shared plumbing for dictionaries backed by an SAELens inference SAE.

Encoding, decoding and persistence (the SAE's own state dict, processed as ``SAE.save_model``
does, under a ``sae.`` prefix) and export to a native SAELens folder. The training backend
(:mod:`dictionaries.sae`) and the pretrained one (:mod:`dictionaries.pretrained`) share it.
SAELens is imported lazily: it pulls in TransformerLens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dictionaries.base import Dictionary
from dictionaries.scaling import unit_rows
from workbench.errors import check
from workbench.io import atomic_path

if TYPE_CHECKING:
    from sae_lens import SAE as SAELensSAE

_PREFIX = "sae."


class _SAELensBackend(Dictionary):
    """Shared encode/decode/persistence for any SAELens inference SAE held in ``sae_``."""

    sae_: SAELensSAE

    def _set_sae(self, sae: SAELensSAE) -> None:
        norm = sae.cfg.normalize_activations
        check(
            norm == "none",
            f"this SAE uses normalize_activations={norm!r}, which rescales each batch at run "
            "time; the workbench needs it folded into the weights: load it with SAELens and "
            "fold the scaling (fold_activation_norm_scaling_factor) first",
        )
        # Workbench activations are always flat (n, d_model), also for hook_z SAEs.
        sae.turn_off_forward_pass_hook_z_reshaping()
        sae.eval()
        self.sae_ = sae
        self.d_model_ = int(sae.cfg.d_in)
        W_dec = sae.W_dec.detach().float().cpu().numpy()  # (d_sae, d_in)
        self.components_ = unit_rows(W_dec)

    @torch.no_grad()
    def _encode(self, X: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(X)).to(self.sae_.device)  # (n, d_in)
        acts = self.sae_.encode(x)  # (n, d_sae)
        if acts.is_sparse:
            acts = acts.to_dense()
        return acts.float().cpu().numpy()

    @torch.no_grad()
    def _decode(self, Z: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(np.ascontiguousarray(Z)).to(self.sae_.device, self.sae_.dtype)
        return self.sae_.decode(z).float().cpu().numpy()  # (n, d_in)

    def _state(self) -> dict[str, torch.Tensor]:
        state = self.sae_.state_dict()
        self.sae_.process_state_dict_for_saving(state)  # as SAE.save_model does
        return {_PREFIX + k: v.detach().cpu() for k, v in state.items()}

    def _extra_config(self) -> dict[str, Any]:
        return {"sae_lens_cfg": _jsonable(self.sae_.cfg.to_dict())}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        state = {k[len(_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_PREFIX)}
        self._set_sae(_build_sae(dict(extra["sae_lens_cfg"]), state))

    def export_sae_lens(self, path: str | os.PathLike[str]) -> Path:
        """Write a native SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), atomically.

        The workbench's model and hook point are written into the SAE's metadata, so SAELens
        (``SAE.load_from_disk(path)``) and other tools see where the SAE belongs.
        """
        self._check_fitted()
        check(
            self.scaler_ is None,
            f"this SAE was fitted on {self.scaler_.scale if self.scaler_ else ''}-scaled "
            "activations, which SAELens cannot express: refit with scale='none' to export it",
        )
        meta = self.sae_.cfg.metadata
        if self.info_.model is not None:
            meta.model_name = self.info_.model
        if self.info_.hook_point is not None:
            meta.hook_name = self.info_.hook_point
        with atomic_path(path) as tmp:
            self.sae_.save_model(tmp)
        return Path(path)


def _build_sae(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> SAELensSAE:
    """An inference SAE from a SAELens config dict and state dict, held in memory.

    Goes through ``SAE.load_from_disk`` with an in-memory converter, so SAELens applies its own
    config defaults and state-dict processing, and builds the module on the meta device (no
    random initialisation, so the global torch RNG is left alone).
    """
    from sae_lens import SAE as SAELensSAE

    def from_memory(
        path: str | Path, device: str, cfg_overrides: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        merged = {**cfg, **(cfg_overrides or {}), "device": device}
        return merged, {k: v.detach().to(device).clone() for k, v in state.items()}

    return SAELensSAE.load_from_disk("<memory>", device="cpu", converter=from_memory)


def _jsonable(value: Any) -> Any:
    """SAELens configs may hold tuples or torch dtypes; make them plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
