"""Training curves: the loss of every step, and validation mIoU and mean F1 after every epoch.

Drawn from the training history the loop keeps (and carries through ``--resume`` in its state file): one
record per epoch with its step, mean loss, the loss of each of its steps and the validation scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.plots.common import new_figure, save_png


def plot_training_curves(
    history: Sequence[dict[str, Any]], output: str | os.PathLike, *, title: str, overwrite: bool = True
) -> Path:
    """Write the curves of ``history`` (the loop's per-epoch records) as a PNG, atomically.

    ``title`` names the run (the checkpoint's base name). ``overwrite`` defaults to True: the picture is
    refreshed after every epoch.
    """
    figure = new_figure(1300, 480, layout="constrained")
    loss_axes, score_axes = figure.subplots(1, 2)
    _draw_loss(loss_axes, history)
    _draw_scores(score_axes, history)
    last = history[-1] if history else {}
    figure.suptitle(f"{title} · epoch {last.get('epoch', 0)} · step {last.get('step', 0)}", fontsize=11)
    return save_png(figure, output, title=f"{title} training curves", overwrite=overwrite)


def _draw_loss(axes, history: Sequence[dict[str, Any]]) -> None:
    steps, losses, middles = [], [], []
    for record in history:
        values = record.get("step_losses") or []
        first = int(record["step"]) - len(values) + 1
        steps.extend(range(first, first + len(values)))
        losses.extend(values)
        middles.append((first + int(record["step"])) / 2)  # an epoch's mean drawn at its middle step
    if losses:
        axes.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="each step")
    means = [float(r["loss"]) for r in history]
    axes.plot(middles, means, "o-", color="#08519c", markersize=4, linewidth=1.5, label="epoch mean")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title("training loss", fontsize=10)
    axes.grid(color="#dddddd", linewidth=0.8)
    if means:
        top = float(np.percentile(losses, 99)) if losses else max(means)
        top = max(top, max(means))
        # one early spike does not flatten the rest; a loss of 0 throughout still gets an axis
        axes.set_ylim(0, top * 1.05 if top > 0 else 1.0)
    axes.legend(fontsize=9, loc="upper right")


def _draw_scores(axes, history: Sequence[dict[str, Any]]) -> None:
    scored = [r for r in history if r.get("validation")]
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation score (%)")
    axes.set_title("validation", fontsize=10)
    axes.grid(color="#dddddd", linewidth=0.8)
    if not scored:
        axes.text(
            0.5,
            0.5,
            "no validation data\n(pass --val-images/--val-labels or --val-fraction)",
            ha="center",
            va="center",
            transform=axes.transAxes,
            color="#555555",
        )
        axes.set_xticks([])
        axes.set_yticks([])
        return
    epochs = [int(r["epoch"]) for r in scored]
    for key, label, color in (("mean_iou", "mIoU", "#d94801"), ("mean_f1", "mean F1", "#238b45")):
        values = [_percent(r["validation"].get(key)) for r in scored]
        axes.plot(epochs, values, "o-", color=color, markersize=4, linewidth=1.5, label=label)
    ious = [_percent(r["validation"].get("mean_iou")) for r in scored]
    if not all(np.isnan(ious)):
        best = int(np.nanargmax(ious))
        axes.plot(epochs[best], ious[best], "*", color="#d94801", markersize=14, label="best (saved)")
        axes.annotate(
            f"{ious[best]:.1f}",
            (epochs[best], ious[best]),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            fontsize=9,
        )
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # one epoch: whole-number ticks, not 0.945..1.05
    axes.set_ylim(0, 100)
    axes.legend(fontsize=9, loc="lower right")


def _percent(value: float | None) -> float:
    return float("nan") if value is None else 100 * float(value)
