"""Sparse autoencoders through SAELens: training on activations, and pretrained loading.

The maths is SAELens's own: the SAE classes (``StandardTrainingSAE`` with ReLU + L1,
``TopKTrainingSAE``), their ``training_forward_pass`` loss, and the optimiser, gradient clipping,
dead-latent tracking and coefficient schedules of ``SAETrainer.step``. This module only feeds
batches of activations (in memory or streamed) to that step, then converts the trained SAE to
its inference class the way ``TrainingSAE.save_inference_model`` does, and folds the decoder
norms so that ``components_`` equals the decoder rows and each code is the length of its
component in the reconstruction.

Two backends:

- ``sae`` (:class:`SparseAutoencoder`): train a new SAE, ``d_in = d_model``, ``d_sae = k``.
- ``pretrained-sae`` (:class:`PretrainedSAE`): wrap an SAE trained elsewhere,
  :meth:`PretrainedSAE.from_release` (SAELens hub releases) or :meth:`PretrainedSAE.from_folder`
  (a local SAELens folder). Its ``fit`` learns nothing.

Both save in the workbench format and export a native SAELens folder with :meth:`export_sae_lens`
(``SAE.load_from_disk`` reads it). SAELens is imported lazily: it pulls in TransformerLens.
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dictionaries.base import (
    ArrayLike,
    Dictionary,
    DictionaryInfo,
    as_matrix,
    unit_rows,
)
from dictionaries.registry import register
from workbench.errors import WorkbenchError, check
from workbench.io import atomic_path

if TYPE_CHECKING:
    from sae_lens import SAE as SAELensSAE

_PREFIX = "sae."
ARCHITECTURES = ("standard", "topk")
_DEFAULT_L1 = 1.0  # SAELens's StandardTrainingSAEConfig default


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


@register("sae")
class SparseAutoencoder(_SAELensBackend):
    """Train a SAELens SAE (``standard``: ReLU + L1 penalty, or ``topk``) on activations.

    Hyperparameters: ``n_components`` latents; ``architecture``; ``l1_coefficient`` (standard
    only, default 1.0); ``k`` active latents per row (topk only, required); Adam ``lr``;
    ``n_steps`` optimiser steps of ``batch_size`` rows (in-memory data is reshuffled every
    epoch); ``normalize_activations="expected_average_only_in"`` trains on activations scaled to
    mean norm sqrt(d_model), SAELens's remedy for the scale-dependence of ``l1_coefficient``
    (the scale is folded back into the weights at the end; ``"none"`` trains on raw values);
    ``device`` for training; ``random_state`` seeds initialisation and shuffling.

    The decoder bias starts at the mean of the first batches (so the SAE does not spend its
    first steps learning the offset). ``sae_`` is the trained SAELens inference SAE.
    """

    def __init__(
        self,
        n_components: int = 256,
        architecture: str = "standard",
        l1_coefficient: float | None = None,
        k: int | None = None,
        lr: float = 3e-4,
        n_steps: int = 2000,
        batch_size: int = 1024,
        normalize_activations: str = "expected_average_only_in",
        device: str = "cpu",
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.architecture = architecture
        self.l1_coefficient = l1_coefficient
        self.k = k
        self.lr = lr
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.normalize_activations = normalize_activations
        self.device = device
        self.random_state = random_state

    def _validate_params(self, d_model: int) -> None:
        super()._validate_params(d_model)
        arch = self.architecture
        check(
            arch in ARCHITECTURES, f"sae architecture={arch!r} is unknown: choose {ARCHITECTURES}"
        )
        if arch == "topk":
            check(self.k is not None, "sae architecture='topk' needs k (active latents per row)")
            check(
                self.k is not None and 1 <= self.k <= self.n_components,
                f"sae k={self.k} is out of range: choose 1..n_components={self.n_components}",
            )
            check(
                self.l1_coefficient is None,
                "sae l1_coefficient applies to architecture='standard' only: drop it for topk",
            )
        else:
            check(self.k is None, "sae k applies to architecture='topk' only: drop it or use topk")
            check(
                self.l1_coefficient is None or self.l1_coefficient >= 0,
                f"sae l1_coefficient={self.l1_coefficient} must be >= 0",
            )
        norms = ("none", "expected_average_only_in")
        check(
            self.normalize_activations in norms,
            f"sae normalize_activations={self.normalize_activations!r} is unknown: choose {norms}",
        )
        check(self.n_steps >= 1, f"sae n_steps={self.n_steps} must be >= 1")
        check(self.batch_size >= 1, f"sae batch_size={self.batch_size} must be >= 1")
        check(self.lr > 0, f"sae lr={self.lr} must be positive")

    # -- fitting --------------------------------------------------------------------------------

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        X32 = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))  # (n, d)
        seed = self.random_state
        rng = np.random.default_rng(seed)

        def epochs() -> Iterator[torch.Tensor]:
            n = X32.shape[0]
            bs = min(self.batch_size, n)
            while True:
                order = torch.from_numpy(rng.permutation(n))
                for start in range(0, n - bs + 1, bs):
                    yield X32[order[start : start + bs]]  # (bs, d)

        return self._train(epochs(), n_rows=X32.shape[0])

    def fit_stream(
        self, batches: Iterable[ArrayLike], info: DictionaryInfo | None = None
    ) -> SparseAutoencoder:
        """Train on an iterable of ``(n_i, d_model)`` batches, re-cut to ``batch_size`` rows.

        A re-iterable source (a list, an activation store) is passed over again until
        ``n_steps`` steps are done; a one-shot iterator ends training when it runs out
        (``fit_stats_["n_steps"]`` says how many steps ran). Non-finite rows are dropped.
        """
        start = time.perf_counter()
        counts = {"rows": 0, "dropped": 0}
        width: list[int] = []

        def rows() -> Iterator[torch.Tensor]:
            passes = 0
            while True:
                got_any = False
                for batch in batches:
                    arr = as_matrix(batch, "batch")
                    if not width:
                        width.append(arr.shape[1])
                        self._begin_fit(arr.shape[1], info)
                    self._check_width(arr.shape[1], "batch")
                    finite = np.isfinite(arr).all(axis=1)  # (n,)
                    if passes == 0:
                        counts["rows"] += int(finite.sum())
                        counts["dropped"] += int((~finite).sum())
                    if finite.any():
                        got_any = True
                        yield torch.from_numpy(np.ascontiguousarray(arr[finite], np.float32))
                passes += 1
                if iter(batches) is batches or not got_any:
                    return

        def rebatched() -> Iterator[torch.Tensor]:
            buf: list[torch.Tensor] = []
            held = 0
            for chunk in rows():
                buf.append(chunk)
                held += chunk.shape[0]
                while held >= self.batch_size:
                    cat = torch.cat(buf)  # (held, d)
                    yield cat[: self.batch_size]
                    buf, held = [cat[self.batch_size :]], held - self.batch_size

        stream = rebatched()
        first = next(stream, None)
        check(
            first is not None,
            f"the stream held fewer than batch_size={self.batch_size} finite rows: "
            "give more data or a smaller batch_size",
        )
        assert first is not None
        extra = self._train(itertools.chain([first], stream), n_rows=None)
        if counts["dropped"]:
            warnings.warn(
                f"dropped {counts['dropped']} rows holding NaN or inf from the sae stream",
                stacklevel=2,
            )
        self._end_fit(counts["rows"], counts["dropped"], start, extra)
        return self

    def _train(self, provider: Iterator[torch.Tensor], n_rows: int | None) -> dict[str, Any]:
        from sae_lens import SAETrainer

        check(
            hasattr(SAETrainer, "step"),
            "this SAELens version has no SAETrainer.step: upgrade sae-lens (pip install -U sae-lens)",
        )
        # Seed a private copy of the torch RNG: the caller's random stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            return self._train_seeded(provider, n_rows)

    def _train_seeded(self, provider: Iterator[torch.Tensor], n_rows: int | None) -> dict[str, Any]:
        from sae_lens import SAETrainer
        from sae_lens.config import SAETrainerConfig

        bs = self.batch_size if n_rows is None else min(self.batch_size, n_rows)
        tsae = self._new_training_sae()
        trainer = SAETrainer(
            cfg=SAETrainerConfig(
                total_training_samples=self.n_steps * bs,
                train_batch_size_samples=bs,
                lr=self.lr,
                lr_end=self.lr,
                lr_decay_steps=self.n_steps // 5,
                device=self.device,
                dead_feature_window=min(1000, max(10, self.n_steps // 10)),
                feature_sampling_window=max(1, self.n_steps),
            ),
            sae=tsae,
            data_provider=provider,
        )
        # Mean and scale are estimated on the first few batches, which are then trained on too.
        head = list(itertools.islice(provider, 8))
        provider = itertools.chain(head, provider)
        trainer.data_provider = provider
        if self.normalize_activations == "expected_average_only_in":
            # ActivationScaler.estimate_scaling_factor's formula, without its progress bar.
            mean_norm = float(torch.cat(head).norm(dim=-1).mean())
            trainer.activation_scaler.scaling_factor = tsae.cfg.d_in**0.5 / max(mean_norm, 1e-12)
        scale = trainer.activation_scaler.scaling_factor or 1.0
        with torch.no_grad():
            tsae.b_dec.data.copy_(torch.cat(head).mean(0).to(tsae.b_dec) * scale)

        losses: dict[str, float] = {}
        for batch in provider:
            if trainer.n_training_steps >= self.n_steps:
                break
            trainer.maybe_reset_sparsity()
            out = trainer.step(batch)  # SAELens: training_forward_pass, backward, Adam, clipping
            trainer.n_training_steps += 1
            losses = {k: float(v.item()) for k, v in out.losses.items()}
        if trainer.activation_scaler.scaling_factor is not None:
            tsae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.set_final_sae_metadata()
        dead = int(trainer.dead_neurons.sum().item())
        self._set_sae(self._to_inference(tsae))
        return {
            "n_steps": int(trainer.n_training_steps),
            "batch_size": bs,
            "scaling_factor": float(scale),
            "final_losses": losses,
            "dead_latents_at_end": dead,
        }

    def _new_training_sae(self) -> Any:
        from sae_lens import (
            StandardTrainingSAE,
            StandardTrainingSAEConfig,
            TopKTrainingSAE,
            TopKTrainingSAEConfig,
        )

        common: dict[str, Any] = {
            "d_in": self.d_model_,
            "d_sae": self.n_components,
            "dtype": "float32",
            "device": self.device,
            "normalize_activations": self.normalize_activations,
        }
        if self.architecture == "topk":
            return TopKTrainingSAE(TopKTrainingSAEConfig(k=int(self.k or 0), **common))
        l1 = _DEFAULT_L1 if self.l1_coefficient is None else self.l1_coefficient
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=l1, **common))

    @staticmethod
    def _to_inference(tsae: Any) -> SAELensSAE:
        """What ``TrainingSAE.save_inference_model`` writes, built in memory, with unit decoder
        rows (topk folds them on conversion; standard folds them here, exactly, since ReLU
        commutes with positive scaling)."""
        state = tsae.state_dict()
        tsae.process_state_dict_for_saving_inference(state)
        sae = _build_sae(tsae.cfg.get_inference_sae_cfg_dict(), state)
        if sae.cfg.architecture() == "standard":
            sae.fold_W_dec_norm()
        return sae


@register("pretrained-sae")
class PretrainedSAE(_SAELensBackend):
    """An SAE trained elsewhere, used as a fixed dictionary.

    Build it with :meth:`from_release` (SAELens's registry of published SAEs; needs the network
    once) or :meth:`from_folder` (a local SAELens folder: ``cfg.json`` +
    ``sae_weights.safetensors``). ``release``, ``sae_id`` and ``folder`` only record the source.
    ``info_`` is read from the SAE's metadata (model name, hook name, layer).

    ``fit(X)`` learns nothing: it checks that ``X`` has the SAE's width, records row counts in
    ``fit_stats_`` and returns ``self``, so a pretrained SAE can stand wherever a fitted
    dictionary is expected.
    """

    def __init__(
        self, release: str | None = None, sae_id: str | None = None, folder: str | None = None
    ) -> None:
        self.release = release
        self.sae_id = sae_id
        self.folder = folder

    @classmethod
    def from_release(cls, release: str, sae_id: str, device: str = "cpu") -> PretrainedSAE:
        """``sae_lens.SAE.from_pretrained(release, sae_id)``, e.g.
        ``PretrainedSAE.from_release("gpt2-small-res-jb", "blocks.8.hook_resid_pre")``.

        Names are checked against SAELens's bundled release list first (no network); a failed
        download becomes a :class:`WorkbenchError` suggesting :meth:`from_folder`.
        """
        from sae_lens import SAE as SAELensSAE
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        directory = get_pretrained_saes_directory()
        if release in directory:
            ids = list(directory[release].saes_map)
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            check(sae_id in ids, f"sae_id {sae_id!r} is not in release {release!r}: try {shown}")
        else:
            check(
                "/" in release,
                f"unknown SAE release {release!r}: use a name from SAELens's pretrained SAE list,"
                " a Hugging Face repo id, or a local folder with PretrainedSAE.from_folder(path)",
            )
        try:
            sae = SAELensSAE.from_pretrained(release, sae_id, device=device)
        except Exception as e:  # network stacks raise many types; all mean "not fetched"
            raise WorkbenchError(
                f"could not fetch SAE {release} / {sae_id} ({type(e).__name__}: {e}); if the "
                "hub is unreachable, give a local SAELens folder with "
                "PretrainedSAE.from_folder(path) instead"
            ) from e
        return cls(release=release, sae_id=sae_id)._adopt(sae)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], device: str = "cpu") -> PretrainedSAE:
        """Load a local SAELens SAE folder (as written by ``SAE.save_model``)."""
        from sae_lens import SAE as SAELensSAE

        folder = Path(path)
        check(folder.is_dir(), f"SAE folder not found: {folder} (check the path)")
        try:
            sae = SAELensSAE.load_from_disk(folder, device=device)
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise WorkbenchError(
                f"{folder} is not a loadable SAELens SAE folder ({e}): it needs cfg.json and "
                "sae_weights.safetensors as written by SAE.save_model"
            ) from e
        return cls(folder=str(folder))._adopt(sae)

    def _adopt(self, sae: SAELensSAE) -> PretrainedSAE:
        self._set_sae(sae)
        meta = sae.cfg.metadata
        info = DictionaryInfo.from_hook_name(meta.hook_name, model=meta.model_name)
        info.d_model = self.d_model_
        self.info_ = info
        self.fit_stats_ = {"n_rows": 0, "dropped_nonfinite_rows": 0, "seconds": 0.0}
        return self

    def _check_fitted(self) -> None:
        check(
            hasattr(self, "sae_"),
            "this PretrainedSAE holds no SAE: build it with PretrainedSAE.from_release(...) or "
            "PretrainedSAE.from_folder(...)",
        )

    def _begin_fit(self, d_model: int, info: DictionaryInfo | None) -> None:
        self._check_fitted()
        self._check_width(d_model, "X")
        if info is not None:  # the caller's info wins; the SAE's own metadata fills the gaps
            known = self.info_.to_dict()
            given = {k: v for k, v in info.to_dict().items() if v is not None}
            self.info_ = DictionaryInfo(**{**known, **given, "d_model": d_model})

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return {"pretrained": True}
