"""The ``pretrained-sae`` backend: an SAE trained elsewhere, used as a fixed dictionary.

Loaded from SAELens's registry of published SAEs (:meth:`PretrainedSAE.from_release`, online) or
from a local SAELens folder (:meth:`PretrainedSAE.from_folder`, offline).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dictionaries.base import DictionaryInfo
from dictionaries.registry import register
from dictionaries.sae_lens_base import _SAELensBackend
from workbench.errors import WorkbenchError, check

if TYPE_CHECKING:
    from sae_lens import SAE as SAELensSAE


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
