"""A damaged .gguf given as a model is a one-line WorkbenchError, never ValueError or
UnicodeDecodeError from the GGUF reader."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.model.embedded import embedded_gguf
from workbench.model.load import load_model

HEADER = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "is not a GGUF file"),
        (b"hello world" * 10, "is not a GGUF file"),
        (b"GGUF\x03\x00", "is truncated"),
        (b"GGUF" + struct.pack("<IQQ", 99, 1, 1), "GGUF version 99"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1), "declares 0 tensors"),
        (HEADER + b"\xff" * 64, "corrupt, truncated or unsupported GGUF"),
    ],
)
def test_damaged_gguf_is_a_workbench_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob: bytes, match: str
) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(blob)
    with pytest.raises(WorkbenchError, match=match) as e:
        load_model(str(path), reuse=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("keep", [1000, 300_000, 2_000_000])
def test_truncated_real_gguf_is_a_workbench_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    real = embedded_gguf("smollm2-135m")
    if real is None:
        pytest.skip("the embedded model is not installed")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cut.gguf"
    with real.open("rb") as f:
        path.write_bytes(f.read(keep))
    with pytest.raises(WorkbenchError, match="corrupt, truncated or unsupported GGUF"):
        load_model(str(path), reuse=False)
