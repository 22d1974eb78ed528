"""Remove every region under a minimum size in raster space, keeping the map gap-free.

The rule, applied to one in-memory window (a split cell, see ``vectorize``), whose regions are its polygons:

* A *region* is a connected set of pixels of one class (4- or 8-connectivity); a *group* is a set of
  regions merged so far (at first, each region alone). A group is *small* under ``min_pixels`` pixels.
* Every small group joins a neighbouring group at once: among its large neighbours if it has any, else
  among all; the one it shares the most neighbouring pixel pairs with (ties: the larger group, then the
  lower id). Two small groups that chose each other become one. Repeat until no small group has a
  neighbour; every small group merges with another in each round, so their number at least halves: a
  few rounds.
* A merged group takes the class of the group it joined (the class of the largest group in a pair that
  chose each other), so a speck goes to its surrounding field and a patch of pure noise becomes clumps of
  at least ``min_pixels`` pixels.
* A small group with no neighbour at all (alone in nodata) becomes nodata: no polygon under the minimum
  remains. Other nodata pixels stay nodata and are nobody's neighbour.

Every round works on the table of neighbouring pixel pairs of the small groups only (one pass over the
pixels builds it), so the cost is a small constant factor of one pass over the window, whatever the
minimum.
"""

from __future__ import annotations

import numpy as np

from geoseg.vector.blocks import label_regions


def sieve(
    classes: np.ndarray, valid: np.ndarray | None, min_pixels: int, connectivity: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(sieved classes, valid mask) of a window: no region under ``min_pixels`` pixels is left in it."""
    labels, label_class = label_regions(classes, valid, connectivity)
    n = len(label_class)
    sizes = np.bincount(labels.ravel(), minlength=n).astype(np.int64)
    sizes[0] = 0
    small = sizes < min_pixels
    small[0] = False
    if not small.any():
        return classes, valid
    src, dst, count = _neighbour_pairs(labels, small, connectivity)
    group = np.arange(n, dtype=np.int64)  # group of each region (a region id: the group's root)
    isolated = np.zeros(n, bool)
    while True:
        small_group = (sizes < min_pixels) & ~isolated
        small_group[0] = False
        gs, gd = group[src], group[dst]
        keep = small_group[gs] & (gs != gd)
        gs, gd, cnt = gs[keep], gd[keep], count[keep]
        lonely = small_group.copy()
        lonely[gs] = False
        lonely[0] = False
        isolated |= lonely
        if not gs.size:
            break
        src, dst, count = src[keep], dst[keep], count[keep]  # pairs of groups now large never count again
        key, inverse = np.unique(gs * n + gd, return_inverse=True)
        totals = np.bincount(inverse.ravel(), weights=cnt)
        a, b = key // n, key % n
        target_large = ~small_group[b]
        # per small group: prefer large targets, then the longest border, the larger group, the lower id
        order = np.lexsort((b, -sizes[b], -totals, ~target_large, a))
        first = order[np.r_[True, a[order[1:]] != a[order[:-1]]]]
        chooser, chosen = a[first], b[first]
        pointer = np.arange(n, dtype=np.int64)
        pointer[chooser] = chosen
        # pairs that chose each other: the larger (then lower id) stays the root
        mutual = pointer[chosen] == chooser
        root_wins = (sizes[chooser] > sizes[chosen]) | (
            (sizes[chooser] == sizes[chosen]) & (chooser < chosen)
        )
        pointer[chooser[mutual & root_wins]] = chooser[mutual & root_wins]
        while True:  # pointer jumping to the roots (chains only grow towards a root)
            jumped = pointer[pointer]
            if np.array_equal(jumped, pointer):
                break
            pointer = jumped
        merged = pointer != np.arange(n)
        np.add.at(sizes, pointer[merged], sizes[merged])
        sizes[merged] = 0
        group = pointer[group]
    out = label_class[group][labels].astype(classes.dtype, copy=False)
    outside = labels == 0
    out[outside] = classes[outside]
    dropped = isolated[group][labels]
    if not dropped.any():
        return out, valid
    return out, ~outside & ~dropped


def _neighbour_pairs(
    labels: np.ndarray, small: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(small region, neighbouring region, number of neighbouring pixel pairs) for every small region."""
    views = [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])]
    if connectivity == 8:
        views += [(labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])]
    sources, neighbours = [], []
    for a, b in views:
        edge = a != b
        a, b = a[edge], b[edge]
        keep = (a > 0) & (b > 0) & (small[a] | small[b])
        a, b = a[keep], b[keep]
        sources += [a, b]
        neighbours += [b, a]
    src = np.concatenate(sources).astype(np.int64)
    dst = np.concatenate(neighbours).astype(np.int64)
    keep = small[src]
    src, dst = src[keep], dst[keep]
    n = len(small)
    key, count = np.unique(src * n + dst, return_counts=True)
    return key // n, key % n, count
