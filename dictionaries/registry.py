"""Name -> backend class, and loading a saved dictionary of any backend.

Backends register themselves with ``@register("pca")``; the package ``__init__`` imports every
backend module, so the registry is complete as soon as ``dictionaries`` is imported::

    import dictionaries
    dictionaries.available()                     # ['dictlearn', 'ica', 'pca', 'pretrained-sae', 'sae']
    pca = dictionaries.create("pca", n_components=8)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dictionaries.base import CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, Dictionary
from dictionaries.params import coerce_params
from workbench.errors import WorkbenchError, check
from workbench.io import load_tensors, read_json

_REGISTRY: dict[str, type[Dictionary]] = {}

T = TypeVar("T", bound=type[Dictionary])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a :class:`Dictionary` subclass available under ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"dictionary method {name!r} is already registered")
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Dictionary]:
    """The class registered under ``name``."""
    check(
        name in _REGISTRY,
        f"unknown dictionary method {name!r}: choose one of {', '.join(available())}",
    )
    return _REGISTRY[name]


def create(name: str, **kwargs: Any) -> Dictionary:
    """Instantiate method ``name`` with hyperparameters ``kwargs``, typed and range-checked.

    Unknown keywords, values of the wrong type (:func:`dictionaries.params.coerce_params`) and
    values out of range (the backend's ``_validate_params`` without a width) are refused in one
    line, before any data is touched.
    """
    cls = get(name)
    obj = cls(**coerce_params(cls, kwargs))
    obj._validate_params(None)
    return obj


def load(path: str | os.PathLike[str]) -> Dictionary:
    """Load a dictionary saved with :meth:`Dictionary.save`, as an instance of its own class."""
    folder = Path(path)
    check(folder.is_dir(), f"dictionary folder not found: {folder} (check the path)")
    cfg = read_json(folder / CONFIG_FILE, what="dictionary config")
    check(
        isinstance(cfg, dict) and cfg.get("format") == FORMAT,
        f"{folder / CONFIG_FILE} is not a workbench dictionary config: "
        "point at a folder written by Dictionary.save",
    )
    version = cfg.get("format_version")
    check(
        version == FORMAT_VERSION,
        f"{folder} has dictionary format version {version} but this workbench reads version "
        f"{FORMAT_VERSION}: refit or convert it",
    )
    cls = get(str(cfg.get("method")))
    tensors, _ = load_tensors(folder / WEIGHTS_FILE, what="dictionary weights")
    try:
        return cls._from_saved(cfg, tensors, str(folder))
    except (KeyError, TypeError, ValueError) as e:
        raise WorkbenchError(f"{folder} could not be loaded ({e}): save it again") from e
