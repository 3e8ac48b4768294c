"""Hyperparameters typed from a backend's declared ``__init__`` signature.

Values typed by a user (``--param lr=abc``) arrive as JSON scalars or text. Each is checked
against the annotation of the keyword it names, so a wrong type is a one-line
:class:`~workbench.errors.WorkbenchError` naming the parameter and its type, not a ``TypeError``
deep inside a fit. Ranges (``lr > 0``, ``k <= n_components``, ...) are each backend's own
``_validate_params``.

>>> from dictionaries.sae import SparseAutoencoder
>>> coerce_params(SparseAutoencoder, {"lr": 1, "n_steps": 1e3})
{'lr': 1.0, 'n_steps': 1000}
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any

from workbench.errors import WorkbenchError, check

# Largest whole number a hyperparameter may hold (seeds, counts): numpy and torch take int64.
MAX_INT = 2**63 - 1


def declared_types(cls: type) -> dict[str, tuple[type, ...]]:
    """``{keyword: accepted types}`` from the annotations of ``cls.__init__``."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    out: dict[str, tuple[type, ...]] = {}
    for name in inspect.signature(cls.__init__).parameters:  # type: ignore[misc]
        if name == "self":
            continue
        hint = hints.get(name, object)
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        out[name] = tuple(args) if args else (hint,)
    return out


def _type_name(kinds: tuple[type, ...]) -> str:
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    names = [words.get(k, k.__name__) for k in kinds if k is not type(None)]
    return " or ".join(names) + (" (or null)" if type(None) in kinds else "")


def _example(name: str, kinds: tuple[type, ...], default: Any) -> str:
    if default is not None and default is not inspect.Parameter.empty:
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        return f"--param {name}={shown}"
    word = "true" if bool in kinds else "8" if int in kinds else "0.5" if float in kinds else "TEXT"
    return f"--param {name}={word}"


def coerce_value(
    method: str, name: str, value: Any, kinds: tuple[type, ...], default: Any = None
) -> Any:
    """``value`` as one of ``kinds``, or a one-line error naming ``method`` and ``name``."""
    hint = f"give e.g. {_example(name, kinds, default)}"
    if value is None:
        check(type(None) in kinds, f"{method} {name} needs {_type_name(kinds)}, not null: {hint}")
        return None
    if bool in kinds and isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float in kinds:
            x = float(value)
            check(math.isfinite(x), f"{method} {name}={value} is not a finite number: {hint}")
            return x
        if int in kinds:
            check(
                isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()),
                f"{method} {name}={value!r} is not a whole number: {hint}",
            )
            n = int(value)
            check(abs(n) <= MAX_INT, f"{method} {name}={n} is too large: {hint}")
            return n
    if isinstance(value, str) and str in kinds:
        return value
    raise WorkbenchError(f"{method} {name}={value!r} is not {_type_name(kinds)}: {hint}")


def coerce_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` typed after ``cls.__init__``'s annotations; unknown keywords are refused."""
    kinds = declared_types(cls)
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
    }
    method = getattr(cls, "method", "") or cls.__name__
    unknown = sorted(set(params) - set(kinds))
    check(
        not unknown,
        f"{method} does not take {', '.join(map(str, unknown))}: its hyperparameters are "
        f"{', '.join(kinds)}",
    )
    return {k: coerce_value(method, k, v, kinds[k], defaults.get(k)) for k, v in params.items()}
