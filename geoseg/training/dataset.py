"""Training data: image/label raster pairs, checked up front, and random augmented crops drawn from them.

Pairing rule (explicit, so a wrong pair is an error rather than a silent mix-up):

1. Identical file stems pair (``images/a.tif`` with ``labels/a.png``).
2. Otherwise each stem is split into tokens at ``_``, ``-``, ``.`` and spaces; the tokens that start and end
   *every* image name are dropped, likewise for the labels, and what remains must match:
   ``image_3.png`` ↔ ``label_3.png``, ``top_potsdam_2_10_RGB.tif`` ↔ ``top_potsdam_2_10_label.tif``,
   ``area1.tif`` ↔ ``area1_mask.tif``.
3. One image and one label pair directly; one file on one side pairs with the file of the other side
   whose varying part occurs in its name.

Anything left unpaired is an error naming it. Every pair is checked before training starts: readable, on
the same grid (:func:`geoseg.raster.grids.check_same_grid`: size, and CRS and transform when both carry
them), bands chosen as ``predict`` chooses them (:func:`geoseg.raster.reading.select_bands`: ``--bands``,
band names, alpha left out), no smaller than the crop, and every label value decodes to a class (see
:mod:`geoseg.labels.raster`). Pixels the image marks invalid (nodata, internal mask, alpha) become ignored
labels, so they count in neither the loss nor the scores. Rasters up to :data:`CACHE_PIXELS` pixels are
held in memory after that check; larger ones are read by windows, so memory stays bounded.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.labels import IGNORE
from geoseg.labels.polygons import GridLabels
from geoseg.labels.raster import LabelEncoding, read_labels
from geoseg.raster.grids import block_windows, check_same_grid, placement
from geoseg.raster.reading import (
    EIGHT_BIT_RANGE,
    Scale,
    open_raster,
    read_bands,
    read_valid_mask,
    resolve_value_range,
    sample_values,
    select_bands,
    stretch_range,
)

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")
CACHE_PIXELS = 16 * 1024 * 1024  # per raster; a 4096² RGB uint8 tile is 48 MiB
SCAN_BLOCK = 2048
STRETCH_SAMPLE = 4 * 1024 * 1024  # pixel values pooled over all images for --scale auto
_TOKEN = re.compile(r"[_\-. ]+")


# --- finding and pairing files ----------------------------------------------------------------------


def expand_paths(specs: Sequence[str | os.PathLike], role: str) -> list[Path]:
    """Files named directly, every raster inside a named folder, or the matches of a quoted glob pattern."""
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            if not inside:
                raise InputError(
                    f"{path}: no raster files ({', '.join(RASTER_SUFFIXES)}) in this {role} folder"
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not matches:
                raise InputError(f"{text}: the {role} pattern matches no file")
            found.extend(matches)
        else:
            raise InputError(f"{path}: {role} file not found")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise InputError(f"no {role} given")
    return unique


def _tokens(path: Path) -> list[str]:
    return [t for t in _TOKEN.split(path.stem) if t]


def _varying_keys(paths: Sequence[Path]) -> list[str]:
    """Each name without the tokens that start and end every name of the set."""
    tokens = [_tokens(p) for p in paths]
    shortest = min(len(t) for t in tokens)
    head = 0
    while head < shortest and len({t[head] for t in tokens}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head and len({t[len(t) - 1 - tail] for t in tokens}) == 1:
        tail += 1
    return ["_".join(t[head : len(t) - tail]) for t in tokens]


def _key_inside(path: Path, keys: Sequence[str]) -> str:
    """The one key of ``keys`` found as a run of tokens in ``path``'s name (pairing one file with many)."""
    tokens = _tokens(path)
    found = []
    for key in keys:
        wanted = key.split("_")
        n = len(wanted)
        if any(tokens[i : i + n] == wanted for i in range(len(tokens) - n + 1)):
            found.append(key)
    return found[0] if len(found) == 1 else path.stem


def pair_files(images: Sequence[Path], labels: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pair images with labels by name (see the module docstring); unpaired files are an error."""
    if len(images) == 1 and len(labels) == 1:
        return [(images[0], labels[0])]
    image_stems = [p.stem for p in images]
    label_stems = [p.stem for p in labels]
    if len(set(image_stems)) == len(images) and set(image_stems) == set(label_stems):
        by_stem = {p.stem: p for p in labels}
        return [(image, by_stem[image.stem]) for image in images]
    if len(images) == 1:
        label_keys = _varying_keys(labels)
        image_keys = [_key_inside(images[0], label_keys)]
    elif len(labels) == 1:
        image_keys = _varying_keys(images)
        label_keys = [_key_inside(labels[0], image_keys)]
    else:
        image_keys, label_keys = _varying_keys(images), _varying_keys(labels)
    for keys, paths, role in ((image_keys, images, "image"), (label_keys, labels, "label")):
        if len(set(keys)) != len(keys) or "" in keys:
            raise InputError(
                f"cannot pair by name: {role} names {', '.join(p.name for p in paths[:4])} do not differ "
                "in one part; name each image and its label alike (a.tif ↔ a.png, image_3.png ↔ label_3.png)"
            )
    by_key = dict(zip(label_keys, labels, strict=True))
    pairs = [(image, by_key[key]) for image, key in zip(images, image_keys, strict=True) if key in by_key]
    unpaired_images = [image.name for image, key in zip(images, image_keys, strict=True) if key not in by_key]
    unpaired_labels = [
        label.name for label, key in zip(labels, label_keys, strict=True) if key not in image_keys
    ]
    if unpaired_images or unpaired_labels:
        parts = []
        if unpaired_images:
            parts.append(f"images without a label: {', '.join(unpaired_images[:5])}")
        if unpaired_labels:
            parts.append(f"labels without an image: {', '.join(unpaired_labels[:5])}")
        raise InputError(
            f"unpaired files ({'; '.join(parts)}); images and labels are paired by the part of the name that "
            "varies (image_3.png ↔ label_3.png)"
        )
    return pairs


# --- checking pairs ---------------------------------------------------------------------------------


@dataclass
class LabelledRaster:
    """One checked image/label pair; arrays are filled when the pair is small enough to keep in memory."""

    image: Path
    label: Path
    width: int
    height: int
    indexes: list[int]  # 1-based image bands fed to the model, in the card's order
    class_pixels: np.ndarray  # per class, pixels valid in the image too
    gsd: float | None
    encoding: LabelEncoding
    image_data: np.ndarray | None = field(default=None, repr=False)
    label_data: np.ndarray | None = field(default=None, repr=False)  # decoded uint8, IGNORE for ignored
    polygons: GridLabels | None = field(default=None, repr=False)  # label polygons instead of a raster
    regions: list[tuple[int, int, int, int]] | None = None  # labelled boxes (row0, col0, row1, col1)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def area(self) -> int:
        """Pixels crops are drawn from: the labelled regions' boxes, else the whole raster."""
        if self.regions is None:
            return self.pixels
        return sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in self.regions)

    def origin(self, rng: np.random.Generator, side: int) -> tuple[int, int]:
        """A random top-left corner of a ``side`` crop, overlapping a labelled region when there are any."""
        if self.regions is None:
            return int(rng.integers(0, self.height - side + 1)), int(rng.integers(0, self.width - side + 1))
        sizes = np.array([(r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in self.regions], dtype=np.float64)
        r0, c0, r1, c1 = self.regions[int(rng.choice(len(sizes), p=sizes / sizes.sum()))]
        rows = (max(0, r0 - side + 1), min(self.height - side, r1 - 1))
        cols = (max(0, c0 - side + 1), min(self.width - side, c1 - 1))
        return int(rng.integers(rows[0], rows[1] + 1)), int(rng.integers(cols[0], cols[1] + 1))

    def extent(self, tile: int) -> tuple[int, int, int, int]:
        """The box validation tiles: the labelled regions' (at least ``tile`` square), else the raster."""
        if self.regions is None:
            return 0, 0, self.height, self.width
        r0, c0 = min(r[0] for r in self.regions), min(r[1] for r in self.regions)
        r1, c1 = max(r[2] for r in self.regions), max(r[3] for r in self.regions)
        r0, c0 = min(r0, max(0, r1 - tile)), min(c0, max(0, c1 - tile))
        return r0, c0, max(r1, min(self.height, r0 + tile)), max(c1, min(self.width, c0 + tile))

    @property
    def bands(self) -> int:
        return len(self.indexes)

    def read(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Chosen image bands (bands, size, size) as stored and decoded labels (size, size) of a square
        window, with IGNORE where the image is invalid."""
        if self.image_data is not None and self.label_data is not None:
            image = self.image_data[:, row : row + size, col : col + size]
            return image, self.label_data[row : row + size, col : col + size]
        window = Window(col, row, size, size)
        if self.polygons is not None:
            labels = self.polygons.read(row, col, size, size)
        else:
            with open_raster(self.label) as src:
                labels = read_labels(src, window, self.encoding, str(self.label))
        with open_raster(self.image) as src:
            return read_bands(src, window, self.indexes), _mask_invalid(labels, src, window, self.indexes)


def _mask_invalid(labels: np.ndarray, image, window, indexes: Sequence[int]) -> np.ndarray:
    """``labels`` with IGNORE where ``image`` is invalid (GDAL's mask: nodata, internal mask, alpha; NaN)."""
    valid = read_valid_mask(image, window, indexes)
    if valid is not None:
        labels[~valid] = IGNORE
    return labels


def _gsd(dataset) -> float | None:
    if placement(dataset) != "transform" or dataset.crs is None or not dataset.crs.is_projected:
        return None
    x, y = abs(dataset.transform.a), abs(dataset.transform.e)
    return float(x) if math.isclose(x, y, rel_tol=0.01) else None


def check_pairs(
    pairs: Sequence[tuple[Path, Path]],
    encoding: LabelEncoding,
    expected_bands: Sequence[str],
    crop: int,
    bands: Sequence[int] | None = None,
) -> list[LabelledRaster]:
    """Open and check every pair before any training (one-line errors naming the file), counting classes.

    ``expected_bands`` are the card's band names; ``bands`` (``--bands``) picks image bands by number.
    """
    if encoding.num_classes is None:
        raise ValueError("training needs the number of classes")
    checked = []
    for image_path, label_path in pairs:
        with open_raster(image_path) as image, open_raster(label_path) as label:
            check_same_grid(image, label, str(image_path), str(label_path))
            indexes = select_bands(image, expected_bands, bands, str(image_path))
            if min(image.width, image.height) < crop:
                raise InputError(
                    f"{image_path}: is {image.width}×{image.height} pixels, smaller than the {crop}-pixel "
                    "crop; pass a smaller crop=N or leave this image out"
                )
            pair_encoding = LabelEncoding(
                num_classes=encoding.num_classes,
                colors=encoding.colors,
                ignore_index=encoding.ignore_index,
                offset=encoding.offset,
                nodata=label.nodata,
            )
            keep = image.width * image.height <= CACHE_PIXELS
            counts = np.zeros(encoding.num_classes + 1, dtype=np.int64)
            decoded = np.empty((label.height, label.width), dtype=np.uint8) if keep else None
            for window in block_windows(label.height, label.width, SCAN_BLOCK):
                block = read_labels(label, window, pair_encoding, str(label_path))
                block = _mask_invalid(block, image, window, indexes)
                values = np.where(block == IGNORE, encoding.num_classes, block)
                counts += np.bincount(values.ravel(), minlength=encoding.num_classes + 1)
                if decoded is not None:
                    r, c = int(window.row_off), int(window.col_off)
                    decoded[r : r + block.shape[0], c : c + block.shape[1]] = block
            if counts[:-1].sum() == 0:
                raise InputError(
                    f"{label_path}: every pixel is ignored or invalid in its image; "
                    "check label_offset=N, ignore_index=N and the image's nodata/mask"
                )
            checked.append(
                LabelledRaster(
                    image=image_path,
                    label=label_path,
                    width=image.width,
                    height=image.height,
                    indexes=indexes,
                    class_pixels=counts[:-1],
                    gsd=_gsd(image),
                    encoding=pair_encoding,
                    image_data=read_bands(image, Window(0, 0, image.width, image.height), indexes)
                    if keep
                    else None,
                    label_data=decoded,
                )
            )
    return checked


def value_range_for(
    rasters: Sequence[LabelledRaster], scale: Scale, model_range: tuple[float, float] = EIGHT_BIT_RANGE
) -> tuple[float, float]:
    """The one raw value range of every image (the card records one, and predict applies it), by predict's
    rules (:func:`geoseg.raster.reading.resolve_value_range`): ``--scale MIN,MAX`` wins; without it 8-bit
    imagery uses the card's range and 16-bit or float imagery for an 8-bit card is refused, never clamped.
    ``"auto"`` is the 2-98 percentile of valid values pooled over all images (a bounded sample of each).
    """
    if scale == "auto":
        per_image = max(64 * 64, STRETCH_SAMPLE // max(1, len(rasters)))
        samples = []
        for raster in rasters:
            with open_raster(raster.image) as image:
                values = sample_values(image, raster.indexes, max_pixels=per_image)
            samples.append(values[:: max(1, values.size // (per_image * raster.bands))])
        source = str(rasters[0].image) if len(rasters) == 1 else f"{len(rasters)} training images"
        return stretch_range(np.concatenate(samples), source)
    value_range = (float(model_range[0]), float(model_range[1]))
    for raster in rasters:  # each image is checked; the rule gives them all the same range
        with open_raster(raster.image) as image:
            value_range = resolve_value_range(image, raster.indexes, scale, model_range, str(raster.image))
    return value_range


# --- random crops -----------------------------------------------------------------------------------


MAX_EMPTY_CROPS = 1000  # crops in a row without a labelled pixel before the run is refused


class CropSampler:
    """Random square crops with scale jitter, 90° rotations and flips (the D4 group), drawn area-weighted.

    A crop reads a window of ``crop / s`` pixels for a scale ``s`` drawn log-uniformly from ``scales``
    (clamped to the raster) and resizes it to ``crop``: bilinear for the image, nearest for the labels.
    All randomness comes from ``rng``, so a saved generator state resumes the same sequence.
    """

    def __init__(
        self,
        rasters: Sequence[LabelledRaster],
        crop: int,
        rng: np.random.Generator,
        scales: tuple[float, float] = (0.5, 1.5),
    ) -> None:
        self.rasters = list(rasters)
        self.crop = crop
        self.rng = rng
        self.scales = scales
        weights = np.array([r.area for r in self.rasters], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.skipped = 0  # crops drawn again because their labels were all ignored

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images float32 B×C×crop×crop in stored units, labels int64 B×crop×crop with IGNORE)``.

        A crop whose labels are all ignored teaches nothing (its loss reads 0): it is drawn again and
        counted in ``skipped``; :data:`MAX_EMPTY_CROPS` of them in a row end the run in one line.
        """
        crops: list[tuple[torch.Tensor, torch.Tensor]] = []
        empty_in_a_row = 0
        while len(crops) < batch_size:
            image, label = self._one()
            if bool((label != IGNORE).any()):
                crops.append((image, label))
                empty_in_a_row = 0
                continue
            self.skipped += 1
            empty_in_a_row += 1
            if empty_in_a_row == MAX_EMPTY_CROPS:
                labelled = sum(int(r.class_pixels.sum()) for r in self.rasters)
                share = 100 * labelled / sum(r.pixels for r in self.rasters)
                raise InputError(
                    f"{MAX_EMPTY_CROPS} training crops in a row had no labelled pixel (the labels cover "
                    f"{share:.2g} % of the training images); label more of them or use a larger crop=N"
                )
        images, labels = zip(*crops, strict=True)
        return torch.stack(images), torch.stack(labels)

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        raster = self.rasters[int(self.rng.choice(len(self.rasters), p=self.weights))]
        lo, hi = np.log(self.scales[0]), np.log(self.scales[1])
        scale = float(np.exp(self.rng.uniform(lo, hi)))
        side = min(round(self.crop / scale), raster.width, raster.height)
        row, col = raster.origin(self.rng, side)
        image, label = raster.read(row, col, side)
        image_t = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32)
        label_t = torch.from_numpy(np.ascontiguousarray(label)).to(torch.int64)
        if side != self.crop:
            image_t = F.interpolate(
                image_t[None],
                size=(self.crop, self.crop),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            label_t = F.interpolate(label_t[None, None].float(), size=(self.crop, self.crop), mode="nearest")[
                0, 0
            ]
            label_t = label_t.to(torch.int64)
        turns = int(self.rng.integers(0, 4))
        if turns:
            image_t = torch.rot90(image_t, turns, dims=(1, 2))
            label_t = torch.rot90(label_t, turns, dims=(0, 1))
        if self.rng.random() < 0.5:
            image_t = torch.flip(image_t, dims=(2,))
            label_t = torch.flip(label_t, dims=(1,))
        return image_t.contiguous(), label_t.contiguous()


def tile_starts(length: int, tile: int) -> list[tuple[int, int]]:
    """Tile origins covering ``0..length`` with the last tile pulled back inside, and where each tile's own
    (not yet covered) pixels begin relative to its origin."""
    starts = list(range(0, max(length - tile, 0) + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    result = []
    covered = 0
    for start in starts:
        result.append((start, covered - start))
        covered = start + tile
    return result
