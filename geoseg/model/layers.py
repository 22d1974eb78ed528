"""Pieces every network file shares (in the timm style: layers apart from models)."""

from __future__ import annotations

import torch

from geoseg.errors import ConfigurationError


def check_input_size(x: torch.Tensor, multiple: int, network: str) -> None:
    """Refuse a height or width the network cannot take, naming the padded size that would work.

    Without it a wrong size fails deep inside the network (a ``torch.cat`` of mismatched skips) or, worse,
    silently returns logits of another size.
    """
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ConfigurationError(
            f"{network} needs height and width that are multiples of {multiple}, got {height}×{width}; "
            f"pad to {-(-height // multiple) * multiple}×{-(-width // multiple) * multiple}"
        )
