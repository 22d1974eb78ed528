"""Telling a checkpoint from a raster by its first bytes, without importing torch.

``geoseg info`` on a raster must not pay for torch (seconds per call in a shell loop over thousands of
scenes), so the format check lives apart from :mod:`geoseg.model.checkpoint`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from geoseg.errors import CheckpointError


def sniff_checkpoint(path: Path) -> str:
    """Decide the format from the bytes, not the suffix; refuse anything that is not a checkpoint."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: file is empty, not a checkpoint")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            if 8 + header_len > size:
                raise CheckpointError(f"{path}: safetensors file is truncated (header runs past the end)")
            return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint "
        "(expected a geoseg .safetensors file, a PyTorch state dict or a Lightning .ckpt)"
    )
