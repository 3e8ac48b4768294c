"""Sparse autoencoders through SAELens: training on activations, and pretrained loading.

The maths is SAELens's own: the SAE classes (``StandardTrainingSAE`` with ReLU + L1,
``TopKTrainingSAE``), their ``training_forward_pass`` loss, and the optimiser, gradient clipping,
dead-latent tracking and coefficient schedules of ``SAETrainer.step``. This module only feeds
batches of activations (in memory or streamed) to that step, then converts the trained SAE to
its inference class the way ``TrainingSAE.save_inference_model`` does, and folds the decoder
norms so that ``components_`` equals the decoder rows and each code is the length of its
component in the reconstruction.

The backend ``sae`` (:class:`SparseAutoencoder`) trains a new SAE, ``d_in = d_model``,
``d_sae = k``; ``pretrained-sae`` (:mod:`dictionaries.pretrained`) wraps one trained elsewhere.
Both save in the workbench format and export a native SAELens folder with :meth:`export_sae_lens`
(``SAE.load_from_disk`` reads it). SAELens is imported lazily: it pulls in TransformerLens.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dictionaries import progress
from dictionaries.base import (
    ArrayLike,
    DictionaryInfo,
    as_matrix,
)
from dictionaries.registry import register
from dictionaries.sae_lens_base import _build_sae, _SAELensBackend
from workbench.errors import WorkbenchError, check

if TYPE_CHECKING:
    from sae_lens import SAE as SAELensSAE

ARCHITECTURES = ("standard", "topk")
# Widest SAE trained here, in latents per residual dimension: SAELens users train 4..64x; wider
# is hours of CPU per run, and beyond the rows a workbench store holds.
MAX_EXPANSION = 64
_DEFAULT_L1 = 1.0  # SAELens's StandardTrainingSAEConfig default


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

    def _validate_params(self, d_model: int | None) -> None:
        super()._validate_params(d_model)
        if d_model is not None:
            most = MAX_EXPANSION * d_model
            check(
                self.n_components <= most,
                f"sae n_components={self.n_components} is over {MAX_EXPANSION} x d_model={d_model}"
                f" = {most} latents, which would train for hours on this machine: choose at "
                f"most {most} (4..32 x d_model is usual)",
            )
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
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise WorkbenchError(
                f"sae device={self.device!r} is not a torch device: give cpu, cuda or mps"
            ) from None
        check(
            device.type in ("cpu", "cuda", "mps"),
            f"sae device={self.device!r} is not supported: give cpu, cuda or mps",
        )
        check(
            device.type != "cuda"
            or (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()),
            f"sae device={self.device!r} but that CUDA device is not available here: use "
            "device=cpu",
        )
        check(
            device.type != "mps" or torch.backends.mps.is_available(),
            f"sae device={self.device!r} but MPS is not available here: use device=cpu",
        )

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
        with progress.task(f"sae fit ({self.n_components} latents, streamed)", self.n_steps):
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
            progress.advance(trainer.n_training_steps, self.n_steps)
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
