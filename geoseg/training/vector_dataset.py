"""Training data from label polygons: each image takes the polygons on it, split by spatial unit.

One label file serves any number of images: each image takes the polygons that fall on it (reprojected to
its CRS, see :mod:`geoseg.labels.polygons`); an image with none is skipped and counted, and polygons on no
image are counted too. On each image, AOIs and label polygons whose boxes come within half a crop of each
other form one *spatial unit*. Crops are drawn only where units are, and ``--val-fraction`` holds out whole
units (seeded), never random pixels or overlapping windows, so validation pixels are never trained on and
lie at least half a crop from training labels. Labels are rasterized on the image's own grid per window,
or once for the whole image when it is small enough to be held in memory (as label rasters are).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.errors import ConfigurationError, GeosegWarning, InputError
from geoseg.labels import IGNORE
from geoseg.labels.polygons import (
    GridLabels,
    SpatialUnit,
    VectorLabelOptions,
    load_label_polygons,
    on_grid,
    spatial_units,
    subset,
)
from geoseg.labels.raster import LabelEncoding
from geoseg.raster.reading import open_raster, read_bands, select_bands
from geoseg.training.dataset import CACHE_PIXELS, SCAN_BLOCK, LabelledRaster, _gsd, _mask_invalid


@dataclass
class VectorSets:
    """Training and validation rasters drawn from label polygons, and how they were made (for the card)."""

    train: list[LabelledRaster]
    validation: list[LabelledRaster]
    record: dict


def vector_training_sets(
    images: Sequence[Path],
    labels: str | os.PathLike,
    options: VectorLabelOptions,
    class_names: Sequence[str],
    *,
    crop: int,
    expected_bands: Sequence[str],
    bands: Sequence[int] | None = None,
    ignore_index: int | None = None,
    val_fraction: float | None = 0.0,
    seed: int = 0,
) -> VectorSets:
    """Check every image and the label polygons before any training, then split by spatial unit.

    ``val_fraction`` None puts every unit in ``validation`` (a separate validation set of images).
    """
    polygons = load_label_polygons(labels, options, class_names)
    encoding = LabelEncoding(num_classes=len(class_names), ignore_index=ignore_index)
    placed: list[tuple[Path, list[int], GridLabels, list[SpatialUnit]]] = []
    used = np.zeros(len(polygons), dtype=bool)
    skipped = []
    for image_path in images:
        with open_raster(image_path) as image:
            indexes = select_bands(image, expected_bands, bands, str(image_path))
            if min(image.width, image.height) < crop:
                raise InputError(
                    f"{image_path}: is {image.width}×{image.height} pixels, smaller than the {crop}-pixel "
                    "crop; pass a smaller crop=N or leave this image out"
                )
            grid, hits = on_grid(
                polygons, image.crs, image.transform, image.width, image.height, ignore_index
            )
        if grid is None:
            skipped.append(image_path.name)
            continue
        used[hits] = True
        placed.append((image_path, indexes, grid, spatial_units(grid, crop / 2)))
    if not placed:
        raise InputError(
            f"{polygons.source}: no label polygon falls on any of the {len(images)} image(s); check that "
            "labels and imagery cover the same place (their CRSs are honoured)"
        )
    if skipped:
        listed = ", ".join(skipped[:5]) + (", …" if len(skipped) > 5 else "")
        warnings.warn(
            f"skipped {len(skipped)} image(s) with no label polygon on them: {listed}",
            GeosegWarning,
            stacklevel=2,
        )
    outside = int((~used).sum())
    if outside:
        warnings.warn(
            f"{polygons.source}: {outside} of {len(polygons)} label polygon(s) fall on no image",
            GeosegWarning,
            stacklevel=2,
        )
    units = [(i, unit) for i, (_, _, _, image_units) in enumerate(placed) for unit in image_units]
    held = _held_out(len(units), val_fraction, seed)
    train, validation = [], []
    for i, (image_path, indexes, grid, _) in enumerate(placed):
        sides = (
            [u for k, (j, u) in enumerate(units) if j == i and k not in held],
            [u for k, (j, u) in enumerate(units) if j == i and k in held],
        )
        for chosen, target in zip(sides, (train, validation), strict=True):
            if chosen:
                target.append(
                    _labelled(
                        image_path, str(polygons.source), indexes, subset(grid, chosen), chosen, encoding
                    )
                )
    if not train or not any(r.class_pixels.sum() for r in train):
        raise InputError(f"{polygons.source}: no training pixel is labelled on a valid image pixel")
    record = {
        "labels": str(labels),
        **options.describe(),
        "overlapping_pairs": polygons.overlaps,
        "images_without_labels": len(skipped),
        "labels_on_no_image": outside,
        "spatial_units": len(units),
        "split": "whole spatial units (AOIs and label polygons within half a crop of each other), seeded"
        if val_fraction
        else "none",
        "validation_units": [
            {"image": placed[j][0].name, "box_rows_cols": list(u.box)}
            for k, (j, u) in enumerate(units)
            if k in held
        ]
        if val_fraction
        else [],
    }
    return VectorSets(train, validation, record)


def _held_out(count: int, fraction: float | None, seed: int) -> set[int]:
    if fraction is None:
        return set(range(count))
    if not fraction:
        return set()
    if count < 2:
        raise ConfigurationError(
            "val_fraction=F holds out whole spatial units (AOIs or clusters of label polygons) but the "
            "labels form only one; pass val_images=FILES and val_labels=FILES, or labels in separate areas"
        )
    n = min(count - 1, max(1, round(fraction * count)))
    return set(np.random.default_rng(seed).choice(count, size=n, replace=False).tolist())


def _labelled(
    image_path: Path,
    source: str,
    indexes: list[int],
    grid: GridLabels,
    units: Sequence[SpatialUnit],
    encoding: LabelEncoding,
) -> LabelledRaster:
    """One image with some units' polygons: classes counted on valid image pixels, cached when small."""
    k = encoding.limit
    counts = np.zeros(k + 1, dtype=np.int64)
    boxes = [u.box for u in units]
    with open_raster(image_path) as image:
        keep = image.width * image.height <= CACHE_PIXELS
        if keep:
            window = Window(0, 0, image.width, image.height)
            label_data = _mask_invalid(grid.read(0, 0, image.height, image.width), image, window, indexes)
            image_data = read_bands(image, window, indexes)
            blocks = [label_data[r0:r1, c0:c1] for r0, c0, r1, c1 in boxes]
        else:
            label_data = image_data = None
            blocks = (
                _mask_invalid(grid.read(r, c, h, w), image, Window(c, r, w, h), indexes)
                for r0, c0, r1, c1 in boxes
                for r in range(r0, r1, SCAN_BLOCK)
                for c in range(c0, c1, SCAN_BLOCK)
                for h, w in [(min(SCAN_BLOCK, r1 - r), min(SCAN_BLOCK, c1 - c))]
            )
        for block in blocks:  # unit boxes do not overlap, so no pixel counts twice
            counts += np.bincount(np.where(block == IGNORE, k, block).ravel(), minlength=k + 1)
        return LabelledRaster(
            image=image_path,
            label=Path(source),
            width=image.width,
            height=image.height,
            indexes=indexes,
            class_pixels=counts[:-1],
            gsd=_gsd(image),
            encoding=encoding,
            image_data=image_data,
            label_data=label_data,
            polygons=grid,
            regions=boxes,
        )
