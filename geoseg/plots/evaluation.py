"""The evaluation picture: the row-normalised confusion matrix beside per-class F1 and IoU bars.

Rows are the truth, as in the CSV and :mod:`geoseg.metrics`; a cell's colour is the share of its truth row,
its text the share and the pixel count. Bars use the class colours (outlined, so a white class shows).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from geoseg.evaluation import EvaluationResult
from geoseg.plots.common import base_name, class_colors, new_figure, save_png

CELL_PX = 62  # matrix cell size; the figure grows with the class count so text keeps its size...
MAX_MATRIX_PX = 1600  # ...up to this side: then cells shrink (255 classes made a 513-megapixel PNG)
MIN_TEXT_CELL_PX = 40  # smaller cells (and their score bars) are drawn without numbers
MAX_TICKS = 50  # class names on an axis; beyond, every n-th
MAX_LABEL = 22


def plot_evaluation(result: EvaluationResult, output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the confusion matrix and the per-class F1/IoU bars of ``result`` as one PNG, atomically."""
    k = len(result.class_names)
    side = max(360, min(CELL_PX * k, MAX_MATRIX_PX))
    numbers = side / k >= MIN_TEXT_CELL_PX
    labels = [_label(name, c.excluded) for name, c in zip(result.class_names, result.per_class, strict=True)]
    below = 5 * max(len(label) for label in labels)  # room for the slanted class names under the matrix
    figure = new_figure(2 * side + 420, side + 200 + below, layout="constrained")
    matrix_axes, bar_axes = figure.subplots(1, 2, width_ratios=[1.15, 1])
    _draw_confusion(figure, matrix_axes, result.confusion, labels, numbers)
    _draw_scores(bar_axes, result, labels, numbers)
    scope = f" without {', '.join(result.excluded_classes)}" if result.excluded_classes else ""
    figure.suptitle(
        f"{base_name(result.prediction)} vs {base_name(result.truth)}\n"
        f"overall accuracy {_pct(result.overall_accuracy)} · mean F1{scope} {_pct(result.mean_f1)} · "
        f"mIoU{scope} {_pct(result.mean_iou)} · {result.pixels_evaluated:,} pixels",
        fontsize=11,
    )
    return save_png(figure, output, title="geoseg evaluation", overwrite=overwrite)


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _label(name: str, excluded: bool) -> str:
    name = name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"
    return f"{name} (excl.)" if excluded else name


def _count(n: int) -> str:
    """Pixel counts short enough for a cell: 987, 12.3k, 4.56M, 1.2G."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.3g}{suffix}"
    return str(n)


def _ticks(labels: list[str]) -> tuple[range, list[str]]:
    """Every class's name, or every n-th when there are more than :data:`MAX_TICKS` (they would overlap)."""
    positions = range(0, len(labels), math.ceil(len(labels) / MAX_TICKS))
    return positions, [labels[i] for i in positions]


def _draw_confusion(figure, axes, confusion: np.ndarray, labels: list[str], numbers: bool) -> None:
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.full(confusion.shape, np.nan), where=rows > 0)
    from matplotlib import colormaps

    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")  # grey row: a class absent from the truth
    image = axes.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0, vmax=1)
    k = len(labels)
    font = 9 if k <= 8 else 8 if k <= 16 else 7
    for i in range(k if numbers else 0):
        for j in range(k):
            if rows[i, 0] == 0:
                continue
            value, count = share[i, j], int(confusion[i, j])
            axes.text(
                j,
                i,
                f"{100 * value:.0f} %\n{_count(count)}" if count else "0",
                ha="center",
                va="center",
                fontsize=font,
                color="white" if value > 0.55 else ("#222222" if count else "#999999"),
            )
    axes.set_xticks(*_ticks(labels), rotation=40, ha="right", rotation_mode="anchor")
    axes.set_yticks(*_ticks(labels))
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    axes.set_title("confusion matrix (share of each truth row, pixel count)", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03, label="share of the truth row")


def _draw_scores(axes, result: EvaluationResult, labels: list[str], numbers: bool) -> None:
    from matplotlib.patches import Patch

    k = len(labels)
    colors = np.array(class_colors(k, result.class_colors)) / 255
    y = np.arange(k)
    height = 0.38
    f1 = np.array([c.f1 for c in result.per_class], dtype=float) * 100
    iou = np.array([c.iou for c in result.per_class], dtype=float) * 100
    style = dict(edgecolor="#333333", linewidth=0.8)
    axes.barh(y - height / 2, np.nan_to_num(f1), height, color=colors, **style)
    axes.barh(y + height / 2, np.nan_to_num(iou), height, color=colors, hatch="///", alpha=0.6, **style)
    for row, (a, b) in enumerate(zip(f1, iou, strict=True) if numbers else ()):
        for value, offset in ((a, -height / 2), (b, height / 2)):
            text = "n/a" if math.isnan(value) else f"{value:.1f}"
            position = 1 if math.isnan(value) else value + 1
            axes.text(position, row + offset, text, va="center", fontsize=8, color="#222222")
    axes.set_yticks(*_ticks(labels))
    axes.set_ylim(k - 0.5, -0.5)  # class 0 on top, as in the matrix
    axes.set_xlim(0, 112)
    axes.set_xticks(range(0, 101, 20))
    axes.set_xlabel("score (%)")
    axes.grid(axis="x", color="#dddddd", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.set_title("per-class F1 and IoU", fontsize=10, loc="left")
    axes.legend(
        handles=[
            Patch(facecolor="#999999", edgecolor="#333333", label="F1"),
            Patch(facecolor="#cccccc", edgecolor="#333333", hatch="///", label="IoU"),
        ],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=2,
        frameon=False,
        fontsize=9,
    )
