"""Scores of geoseg.metrics against values worked out by hand as fractions."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest

from geoseg.metrics import class_indices, confusion_matrix, masked_confusion_matrix, scores_from_confusion

# Truth and prediction of a 4×4 map with three classes. Worked by hand:
# confusion (rows truth, columns prediction) = [[3, 1, 0], [0, 3, 1], [1, 1, 6]].
TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
PREDICTION = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 2], [2, 2, 2, 1]])
EXPECTED_CONFUSION = [[3, 1, 0], [0, 3, 1], [1, 1, 6]]
# class 0: TP 3, FP 1, FN 1; class 1: TP 3, FP 2, FN 1; class 2: TP 6, FP 1, FN 2
PRECISION = [F(3, 4), F(3, 5), F(6, 7)]
RECALL = [F(3, 4), F(3, 4), F(3, 4)]
F1 = [F(3, 4), F(2, 3), F(4, 5)]
IOU = [F(3, 5), F(1, 2), F(2, 3)]


def close(value: float, fraction: F) -> bool:
    return math.isclose(value, float(fraction), rel_tol=0, abs_tol=1e-12)


def test_confusion_matrix_counts_truth_rows_against_prediction_columns():
    assert confusion_matrix(TRUTH, PREDICTION, 3).tolist() == EXPECTED_CONFUSION


def test_masked_confusion_matrix_counts_only_valid_pixels():
    valid = np.ones_like(TRUTH, dtype=bool)
    valid[3, 3] = False  # the truth-2 / predicted-1 pixel
    assert masked_confusion_matrix(TRUTH, PREDICTION, 3, valid).tolist() == [[3, 1, 0], [0, 3, 1], [1, 0, 6]]


def test_confusion_matrix_rejects_indices_outside_the_classes():
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_scores_match_hand_computed_fractions():
    s = scores_from_confusion(confusion_matrix(TRUTH, PREDICTION, 3))
    assert close(s.overall_accuracy, F(12, 16))
    for k in range(3):
        assert close(s.precision[k], PRECISION[k])
        assert close(s.recall[k], RECALL[k])
        assert close(s.f1[k], F1[k])
        assert close(s.iou[k], IOU[k])
    assert close(s.mean_f1, F(133, 180))  # (3/4 + 2/3 + 4/5) / 3
    assert close(s.mean_iou, F(53, 90))  # (3/5 + 1/2 + 2/3) / 3
    assert s.truth_pixels.tolist() == [4, 4, 8]
    assert s.predicted_pixels.tolist() == [4, 5, 7]


def test_excluded_class_leaves_the_means_but_not_overall_accuracy():
    s = scores_from_confusion(confusion_matrix(TRUTH, PREDICTION, 3), exclude=[2])
    assert close(s.overall_accuracy, F(12, 16))
    assert close(s.mean_f1, (F(3, 4) + F(2, 3)) / 2)
    assert close(s.mean_iou, (F(3, 5) + F(1, 2)) / 2)
    assert s.included.tolist() == [True, True, False]


def test_class_absent_from_truth_and_prediction_is_nan_and_not_averaged():
    s = scores_from_confusion(confusion_matrix(TRUTH, PREDICTION, 4))
    assert (
        math.isnan(s.f1[3])
        and math.isnan(s.iou[3])
        and math.isnan(s.precision[3])
        and math.isnan(s.recall[3])
    )
    assert close(s.mean_f1, F(133, 180))
    assert close(s.mean_iou, F(53, 90))


def test_class_predicted_but_absent_from_truth_scores_zero_and_is_averaged():
    truth = np.array([0, 0, 0, 0])
    prediction = np.array([0, 0, 0, 1])
    s = scores_from_confusion(confusion_matrix(truth, prediction, 2))
    assert s.f1[1] == 0.0 and s.iou[1] == 0.0 and s.precision[1] == 0.0
    assert math.isnan(s.recall[1])
    assert close(s.mean_iou, (F(3, 4) + 0) / 2)
    assert close(s.mean_f1, (F(6, 7) + 0) / 2)


def test_empty_confusion_matrix_has_nan_overall_accuracy():
    assert math.isnan(scores_from_confusion(np.zeros((2, 2), dtype=int)).overall_accuracy)


def test_class_indices_accepts_names_case_insensitively_and_numbers():
    names = ["impervious surfaces", "building", "clutter"]
    assert class_indices(names, ["Clutter", "building", "0"]) == [2, 1, 0]
    with pytest.raises(ValueError, match="unknown class 'tree'"):
        class_indices(names, ["tree"])
