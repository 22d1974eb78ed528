"""The MANet training loss: soft (label-smoothed) cross-entropy plus Dice, both blind to ignored pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geoseg.labels import IGNORE


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.05, ignore_index: int = IGNORE
) -> torch.Tensor:
    """Cross-entropy with label smoothing, averaged over the pixels that are not ignored (0 when none is)."""
    valid = target != ignore_index
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0.0
    total = F.cross_entropy(
        logits.float(), target, ignore_index=ignore_index, label_smoothing=smoothing, reduction="sum"
    )
    return total / count


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 0.05, ignore_index: int = IGNORE
) -> torch.Tensor:
    """Multi-class soft Dice over the batch: 1 − Dice per class, averaged over the classes in the target.

    Classes absent from the batch's target are left out, so a batch without, say, water neither rewards
    nor punishes the water channel (the convention of GeoSeg's Dice loss).
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1)
    one_hot = F.one_hot(torch.where(valid[:, 0], target, 0), num_classes).permute(0, 3, 1, 2).float()
    probs = probs * valid
    one_hot = one_hot * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    dice = (2.0 * intersection + smooth) / (cardinality + smooth)
    present = one_hot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    return (1.0 - dice)[present].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.05) -> torch.Tensor:
    """Soft cross-entropy + Dice with equal weights, as in the authors' training setup."""
    return soft_cross_entropy(logits, target, smoothing) + dice_loss(logits, target)
