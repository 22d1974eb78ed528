"""Windows of a class raster, the grid of cells it is cut into, and labelling the regions of a window.

Everything downstream works in *pixel space*: a cell's polygons have integer corner coordinates in the
whole raster's pixel grid, so the edges of neighbouring cells match bit for bit. The affine transform is
applied once, when polygons are written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# (classes, valid) for a window; valid is None where every pixel is valid
BlockReader = Callable[["Window"], tuple[np.ndarray, "np.ndarray | None"]]

STRUCTURES = {
    4: ndimage.generate_binary_structure(2, 1),
    8: ndimage.generate_binary_structure(2, 2),
}


@dataclass(frozen=True)
class Window:
    """A rectangle of the raster in pixels: rows [row0, row1), columns [col0, col1)."""

    row0: int
    col0: int
    row1: int
    col1: int

    @property
    def height(self) -> int:
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        return self.col1 - self.col0


@dataclass(frozen=True)
class BlockGrid:
    """The raster cut into square blocks (the cells of the split grid), visited row by row."""

    height: int
    width: int
    block_size: int

    @property
    def rows(self) -> int:
        return -(-self.height // self.block_size)

    @property
    def cols(self) -> int:
        return -(-self.width // self.block_size)

    def __len__(self) -> int:
        return self.rows * self.cols

    def __iter__(self) -> Iterator[tuple[int, int, Window]]:
        size = self.block_size
        for r in range(self.rows):
            for c in range(self.cols):
                yield (
                    r,
                    c,
                    Window(
                        r * size, c * size, min(self.height, (r + 1) * size), min(self.width, (c + 1) * size)
                    ),
                )


def label_regions(
    classes: np.ndarray, valid: np.ndarray | None, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label connected regions of equal class: ``labels`` (int32, 0 = invalid) and ``label_class[label]``.

    Labels are numbered class by class (ascending class value), each class in scipy's raster-scan order,
    so the same pixels always get the same labels.
    """
    structure = STRUCTURES[connectivity]
    labels = np.zeros(classes.shape, np.int32)
    values = _present_values(classes, valid)
    label_class = [np.zeros(1, np.int64)]
    offset = 0
    scratch = np.empty(classes.shape, np.int32)
    for value in values:
        mask = classes == value
        if valid is not None:
            mask &= valid
        count = ndimage.label(mask, structure=structure, output=scratch)
        if offset:
            np.add(scratch, offset, out=scratch, where=mask)
        labels += scratch
        label_class.append(np.full(count, value, np.int64))
        offset += count
    return labels, np.concatenate(label_class)


def _present_values(classes: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    data = classes if valid is None else classes[valid]
    if data.size == 0:
        return np.zeros(0, np.int64)
    if classes.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(data.ravel()))
    return np.unique(data)
