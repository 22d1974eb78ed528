"""Accuracy of a class map against ground truth: the confusion matrix and the scores of the MANet paper.

Pure numpy, no rasters: :mod:`geoseg.evaluation` reads rasters block by block and feeds this module, and the
training loop uses it for validation. Rows of a confusion matrix are the truth, columns the prediction.

Conventions (those of GeoSeg's evaluator, made explicit):

- Overall accuracy is computed over every class, excluded ones included.
- Per class: precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN).
  A ratio whose denominator is zero is NaN, never 0: a class with neither truth nor predicted pixels has
  NaN F1 and IoU and is left out of the means. A class that is predicted but absent from the truth (or
  present but never predicted) scores F1 = IoU = 0 and counts in the means: it is a real error.
- Mean F1 and mIoU average the classes that are not excluded and not NaN (``--exclude-classes clutter``
  reproduces the paper's Vaihingen/Potsdam figures).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (truth, prediction) pairs as a ``num_classes × num_classes`` int64 matrix.

    Both arrays hold class indices in ``0..num_classes-1`` (already stripped of ignored pixels); one
    ``bincount`` over the combined index keeps this linear in the pixel count.
    """
    truth = np.asarray(truth).ravel().astype(np.int64, copy=False)
    prediction = np.asarray(prediction).ravel().astype(np.int64, copy=False)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth has {truth.size} values but prediction has {prediction.size}")
    if truth.size and (
        min(truth.min(), prediction.min()) < 0 or max(truth.max(), prediction.max()) >= num_classes
    ):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    counts = np.bincount(truth * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def masked_confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, valid: np.ndarray
) -> np.ndarray:
    """:func:`confusion_matrix` over the pixels where ``valid`` is true."""
    return confusion_matrix(np.asarray(truth)[valid], np.asarray(prediction)[valid], num_classes)


@dataclass(frozen=True)
class Scores:
    """Scores derived from one confusion matrix; per-class arrays are indexed by class."""

    confusion: np.ndarray
    overall_accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    included: np.ndarray  # bool per class: counted in the means (not excluded)
    mean_f1: float
    mean_iou: float

    @property
    def truth_pixels(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def predicted_pixels(self) -> np.ndarray:
        return self.confusion.sum(axis=0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def scores_from_confusion(confusion: np.ndarray, exclude: Iterable[int] = ()) -> Scores:
    """Overall accuracy, per-class precision/recall/F1/IoU and the means without the ``exclude`` classes.

    ``confusion`` holds counts, or any non-negative weights such as the estimated area proportions of a
    stratified sample (then precision is user's and recall producer's accuracy)."""
    confusion = np.asarray(confusion)  # counts, or estimated area proportions of a sample
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {confusion.shape}")
    k = confusion.shape[0]
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    total = confusion.sum()
    included = np.ones(k, dtype=bool)
    for index in exclude:
        if not 0 <= index < k:
            raise ValueError(f"excluded class {index} is outside 0..{k - 1}")
        included[index] = False
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    return Scores(
        confusion=confusion,
        overall_accuracy=float(tp.sum() / total) if total else float("nan"),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=f1,
        iou=iou,
        included=included,
        mean_f1=_nanmean(f1[included]),
        mean_iou=_nanmean(iou[included]),
    )


def class_indices(names: Sequence[str], selected: Iterable[str]) -> list[int]:
    """Indices of ``selected`` class names (case-insensitive); a name not in ``names`` raises ValueError."""
    lookup = {name.lower(): i for i, name in enumerate(names)}
    indices = []
    for name in selected:
        key = name.strip().lower()
        if key.isdigit() and key not in lookup:
            index = int(key)
            if index >= len(names):
                raise ValueError(f"class index {index} is outside 0..{len(names) - 1}")
            indices.append(index)
            continue
        if key not in lookup:
            raise ValueError(f"unknown class {name!r}; classes are: {', '.join(names)}")
        indices.append(lookup[key])
    return indices
