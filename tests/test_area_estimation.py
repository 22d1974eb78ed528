"""The stratified estimators of Olofsson et al. (2014) against the paper's own numerical example."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.area_estimation import stratified_estimates

# Olofsson et al. 2014, section 5 (Table 8): Landsat pixels of 30 m mapped as deforestation, forest gain,
# stable forest, stable non-forest, and the sample counts, rows map class, columns reference class.
MAPPED_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])


def test_the_papers_example_gives_its_published_areas_intervals_and_accuracies():
    result = stratified_estimates(COUNTS, MAPPED_PIXELS * 30.0**2)
    hectares = result.area / 1e4
    # published (p. 54): 21,158 ± 6,158 ha; 11,686 ± 3,756 ha; 285,770 ± 15,510 ha; 581,386 ± 16,282 ha
    assert np.round(hectares).tolist() == [21_158, 11_686, 285_770, 581_386]
    assert np.round(result.area_ci95 / 1e4).tolist() == [6_158, 3_756, 15_510, 16_282]
    assert np.round(result.users_accuracy, 2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert np.round(result.producers_accuracy, 2).tolist() == [0.75, 0.85, 0.93, 0.96]
    assert round(result.overall_accuracy, 2) == 0.95
    # the area estimates partition the map, and their proportions its cells
    assert result.area.sum() == pytest.approx(MAPPED_PIXELS.sum() * 900.0)
    assert result.proportions.sum() == pytest.approx(1.0)


def test_a_perfect_sample_gives_the_mapped_areas_without_uncertainty():
    result = stratified_estimates(np.diag([10, 20, 5]), np.array([3.0, 2.0, 5.0]))
    assert result.area.tolist() == [3.0, 2.0, 5.0]
    assert result.area_se.tolist() == [0.0, 0.0, 0.0]
    assert result.users_accuracy.tolist() == result.producers_accuracy.tolist() == [1.0, 1.0, 1.0]
    assert (result.overall_accuracy, result.overall_se) == (1.0, 0.0)


def test_hand_computed_two_class_case():
    # map: 80 ha water, 20 ha land; sample: water 9 right 1 wrong, land 4 right 1 wrong
    result = stratified_estimates(np.array([[9, 1], [1, 4]]), np.array([80.0, 20.0]))
    # p = [[.8*.9, .8*.1], [.2*.2, .2*.8]] = [[.72, .08], [.04, .16]]
    assert result.area == pytest.approx([76.0, 24.0])
    assert result.users_accuracy == pytest.approx([0.9, 0.8])
    assert result.producers_accuracy == pytest.approx([0.72 / 0.76, 0.16 / 0.24])
    assert result.overall_accuracy == pytest.approx(0.88)
    # eq. 10: SE(p_.1)² = .8² (.9 × .1 / 9) + .2² (.2 × .8 / 4)
    assert result.area_se[0] == pytest.approx(100 * np.sqrt(0.64 * 0.01 + 0.04 * 0.04))
    assert result.overall_se == pytest.approx(np.sqrt(0.64 * 0.09 / 9 + 0.04 * 0.16 / 4))


def test_a_mapped_class_without_sample_units_is_refused_and_an_absent_one_ignored():
    with pytest.raises(ValueError, match=r"strata \[1\] have mapped area but no sample unit"):
        stratified_estimates(np.array([[5, 0], [0, 0]]), np.array([1.0, 1.0]))
    result = stratified_estimates(np.array([[5, 0], [0, 0]]), np.array([1.0, 0.0]))
    assert result.area.tolist() == [1.0, 0.0] and np.isnan(result.producers_accuracy[1])
