"""Remove regions under a minimum size in raster space, block by block, with a whole-raster result.

The rule (every step is decided on the original map, so it has one answer whatever the block layout):

* A *region* is a connected set of pixels of one class (4- or 8-connectivity); it is *small* when it has
  fewer than ``min_pixels`` pixels.
* A small region that touches a large region takes the class it shares the most neighbouring pixel pairs
  with among the large regions around it (its longest border; ties go to the lower class value).
* The small regions are then filled layer by layer: a small region that touches only small regions takes,
  among its neighbours one layer closer to a large region, the class (as they receive it) it shares the
  most pixel pairs with, up to ``MAX_LEVEL`` layers. This clears specks nested in specks, such as a dot
  inside a thin ring inside a field. A small region with no large region within ``MAX_LEVEL`` layers (a
  patch of pure noise, or a speck alone in nodata) keeps its class.
* Nodata pixels stay nodata and are nobody's neighbour, so the map stays gap-free: every valid pixel keeps
  a class.

Blockwise exactness: a block is decided from a window around it (its *halo*). A small region reaching a
block has all its pixels within ``min_pixels`` of it, so a window wide enough sees it whole, and a region
cut by the window edge that already counts ``min_pixels`` pixels inside is certainly large. Whenever a
decision depends on a region cut by the window edge that is still under the minimum inside it, the window
grows; at ``(MAX_LEVEL + 2) * (min_pixels + 1)`` pixels of halo every such region is provably large. So the
result equals a single pass over the whole raster, and memory depends on the block size and the minimum
size, never on the raster size.
"""

from __future__ import annotations

import numpy as np

from geoseg.vector.blocks import BlockReader, Window, label_regions

MAX_LEVEL = 4


def halos(min_pixels: int) -> tuple[int, int]:
    """The first halo tried (enough for regions with a large neighbour) and the halo that always suffices."""
    return 2 * min_pixels + 2, (MAX_LEVEL + 2) * (min_pixels + 1) + 2


def sieved_reader(
    read: BlockReader, height: int, width: int, min_pixels: int, connectivity: int
) -> BlockReader:
    """A block reader returning the sieved classes of each window (same valid mask)."""
    first, last = halos(min_pixels)

    def read_sieved(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        for halo in (first, last):
            outer = window.grow(halo, height, width)
            classes, valid = read(outer)
            result = sieve_window(
                classes,
                valid,
                min_pixels=min_pixels,
                connectivity=connectivity,
                outer=outer,
                inner=window,
                raster_shape=(height, width),
                assume_cut_large=halo == last,
            )
            if result is not None:
                core = (
                    slice(window.row0 - outer.row0, window.row1 - outer.row0),
                    slice(window.col0 - outer.col0, window.col1 - outer.col0),
                )
                return result, None if valid is None else valid[core]
        raise AssertionError("the largest halo always decides")  # pragma: no cover

    return read_sieved


def sieve_window(
    classes: np.ndarray,
    valid: np.ndarray | None,
    *,
    min_pixels: int,
    connectivity: int,
    outer: Window,
    inner: Window,
    raster_shape: tuple[int, int],
    assume_cut_large: bool = False,
) -> np.ndarray | None:
    """Sieved classes of ``inner`` from the pixels of ``outer`` (a window around it), or None if undecidable.

    ``assume_cut_large`` treats every region cut by the window edge as large (true once the halo is wide
    enough, see the module docstring).
    """
    height, width = raster_shape
    core = (
        slice(inner.row0 - outer.row0, inner.row1 - outer.row0),
        slice(inner.col0 - outer.col0, inner.col1 - outer.col0),
    )
    labels, label_class = label_regions(classes, valid, connectivity)
    n = len(label_class)
    sizes = np.bincount(labels.ravel(), minlength=n)
    cut = np.zeros(n, bool)
    if outer.row0 > 0:
        cut[labels[0]] = True
    if outer.row1 < height:
        cut[labels[-1]] = True
    if outer.col0 > 0:
        cut[labels[:, 0]] = True
    if outer.col1 < width:
        cut[labels[:, -1]] = True
    cut[0] = False
    large = sizes >= min_pixels
    if assume_cut_large:
        large |= cut
    large[0] = False
    small = ~large
    small[0] = False
    unsure = small & cut  # cut by the window edge and under the minimum inside it: size unknown
    core_labels = labels[core]
    targets = np.unique(core_labels[small[core_labels]])
    if targets.size == 0:
        return classes[core].copy()
    if unsure[targets].any():
        return None

    src, dst, count = _neighbour_pairs(labels, small, connectivity)
    # Regions whose answer may depend on an unsure region: those next to one, and (through small regions)
    # everything within MAX_LEVEL steps of those.
    tainted = unsure.copy()
    tainted[src[unsure[dst]]] = True
    between_small = small[dst]
    for _ in range(MAX_LEVEL):
        spread = tainted[dst] & between_small
        if not spread.any():
            break
        tainted[src[spread]] = True
    if tainted[targets].any():
        return None

    # Layer by layer: level 1 touches a large region and takes the class it shares most pixel pairs with;
    # level k takes the class (as received) it shares most pairs with among its level k-1 neighbours.
    new_class = label_class.copy()
    level = np.where(large, 0, np.iinfo(np.int64).max)
    for k in range(1, MAX_LEVEL + 1):
        from_previous = (level[dst] == k - 1) & (level[src] > k - 1)
        if not from_previous.any():
            break
        s, received, cnt = src[from_previous], new_class[dst[from_previous]], count[from_previous]
        key, inverse = np.unique(np.stack([s, received], axis=1), axis=0, return_inverse=True)
        totals = np.bincount(inverse.ravel(), weights=cnt)
        order = np.lexsort((key[:, 1], -totals, key[:, 0]))
        first = order[np.r_[True, key[order[1:], 0] != key[order[:-1], 0]]]
        new_class[key[first, 0]] = key[first, 1]
        level[key[first, 0]] = k
    lookup = new_class[core_labels]
    out = classes[core].copy()
    changed = small[core_labels]
    out[changed] = lookup[changed]
    return out


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
    n = int(labels.max()) + 1
    key, count = np.unique(src * n + dst, return_counts=True)
    return key // n, key % n, count
