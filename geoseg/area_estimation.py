"""Area and accuracy from a stratified random sample, with their uncertainty (Olofsson et al. 2014).

A map's pixel counts are biased areas: every error of the map moves area from one class to another. A
sample of units labelled by a person (the *reference*) corrects them. With the map classes as strata, the
estimators of Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014), "Good practices for estimating
area and assessing accuracy of land change", Remote Sensing of Environment 148, 42–57 (equations 2–10, after
Cochran 1977 and Olofsson et al. 2013) give each class's area with a standard error, and user's, producer's
and overall accuracy. Pure numpy, no rasters: :mod:`geoseg.evaluation` counts the sample and the map.

Here, as in the paper, rows are the map classes (strata) and columns the reference classes, unlike
:mod:`geoseg.metrics` (rows truth). The 95 % intervals are ±1.96 standard errors, the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z95 = 1.96


@dataclass(frozen=True)
class StratifiedEstimates:
    """Estimates per class (indexed by class) and overall; areas in the unit of the mapped areas given.

    A standard error that needs two or more sample units of a stratum where it has fewer is NaN."""

    proportions: np.ndarray  # p_ij: estimated proportion of the area mapped as i that is j (rows map)
    area: np.ndarray
    area_se: np.ndarray
    users_accuracy: np.ndarray
    users_se: np.ndarray
    producers_accuracy: np.ndarray
    producers_se: np.ndarray
    overall_accuracy: float
    overall_se: float

    @property
    def area_ci95(self) -> np.ndarray:
        """Half-widths of the 95 % confidence intervals of the areas."""
        return Z95 * self.area_se


def stratified_estimates(counts: np.ndarray, mapped_area: np.ndarray) -> StratifiedEstimates:
    """The estimators of Olofsson et al. (2014) from sample counts ``counts[i, j]`` (units mapped as class i
    whose reference class is j) and the map's area of each class ``mapped_area[i]`` (the strata).

    A stratum with mapped area must hold sample units (else nothing can be said of it: ValueError); one
    with neither area nor units takes no part. Producer's accuracy of a class no unit has is NaN.
    """
    n = np.asarray(counts, dtype=np.float64)
    mapped = np.asarray(mapped_area, dtype=np.float64)
    k = len(mapped)
    if n.shape != (k, k):
        raise ValueError(f"counts must be {k} × {k} for {k} strata, got shape {n.shape}")
    if np.any(n < 0) or np.any(mapped < 0):
        raise ValueError("counts and mapped areas must not be negative")
    units = n.sum(axis=1)
    unsampled = np.flatnonzero((mapped > 0) & (units == 0))
    if unsampled.size:
        raise ValueError(f"strata {unsampled.tolist()} have mapped area but no sample unit")
    total = mapped.sum()
    if total <= 0:
        raise ValueError("the map has no area")
    weight = mapped / total  # W_i
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(units[:, None] > 0, n / units[:, None], 0.0)  # n_ij / n_i.
        # per W_i², for eq. 10: 0/0 (NaN) for a stratum of one unit, whose variance is undefined
        spread = share * (1 - share) / (units[:, None] - 1)
        spread[units == 0] = 0.0  # strata without area or units take no part
        proportions = weight[:, None] * share  # eq. 4
        reference = proportions.sum(axis=0)  # p_.j: the estimated area proportion of each class
        correct = np.diag(proportions)
        users = np.where(units > 0, np.diag(n) / units, np.nan)  # eq. 2 (U_i = p_ii / p_i.)
        producers = np.where(reference > 0, correct / reference, np.nan)  # eq. 3
        users_var = users * (1 - users) / (units - 1)
        area_var = (weight[:, None] ** 2 * spread).sum(axis=0)  # eq. 10
        overall_var = (weight**2 * np.where(units > 0, users_var, 0.0)).sum()
        # producer's accuracy (Olofsson et al. 2013, eq. 6, with N_i the mapped areas)
        estimated = (mapped[:, None] / np.where(units > 0, units, 1)[:, None] * n).sum(axis=0)  # N̂_.j
        others = (mapped[:, None] ** 2 * spread).sum(axis=0) - mapped**2 * np.diag(spread)
        producers_var = (mapped**2 * (1 - producers) ** 2 * users_var + producers**2 * others) / estimated**2
    return StratifiedEstimates(
        proportions=proportions,
        area=total * reference,
        area_se=total * np.sqrt(area_var),
        users_accuracy=users,
        users_se=np.sqrt(users_var),
        producers_accuracy=producers,
        producers_se=np.sqrt(producers_var),
        overall_accuracy=float(correct.sum()),
        overall_se=float(np.sqrt(overall_var)),
    )
