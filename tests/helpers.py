"""Test helpers shared by the inference and predict tests (importable as ``helpers``: pytest puts tests/ on
``sys.path`` in its default import mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from torch.utils._python_dispatch import TorchDispatchMode

from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.presets import preset_card
from geoseg.raster.classes import NODATA_CLASS, write_class_metadata
from geoseg.raster.writing import open_tiled, tiled_profile, to_cog

# The card of the plumbing tests: six classes with distinct colours, 64 px tiles (PixelNet runs any card).
CARD = ModelCard(
    classes=[ClassInfo(f"class {i}", (40 * i, 255 - 40 * i, 7 * i)) for i in range(6)],
    backbone="resnet18",
    tile_size=64,
    overlap=16,
)


class PixelNet(torch.nn.Module):
    """A fixed random two-layer network applied to each pixel on its own (1x1 'convolutions' written with
    element-wise operations, so a pixel's logits are bit-identical whatever the tensor around it): fast, and
    its answer does not depend on tiling, batching or chunking."""

    def __init__(self, bands: int = 3, classes: int = 6, hidden: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w1", torch.randn(hidden, bands, generator=g) * 2)
        self.register_buffer("b1", torch.randn(hidden, generator=g))
        self.register_buffer("w2", torch.randn(classes, hidden, generator=g))
        self.register_buffer("b2", torch.randn(classes, generator=g))

    @staticmethod
    def _dense(x, weight, bias):
        out = bias.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()
        for c in range(x.shape[1]):
            out += weight[:, c].view(1, -1, 1, 1) * x[:, c : c + 1]
        return out

    def forward(self, x):
        return self._dense(torch.relu(self._dense(x, self.w1, self.b1)), self.w2, self.b2)


class NeighbourNet(PixelNet):
    """PixelNet on a 9x9 box blur of its input, zero-padded at the tile's edges: a pixel's logits depend on
    its neighbours, and near a tile's edge on that edge, as a real network's do."""

    def forward(self, x):
        blurred = torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=True)
        return super().forward(blurred)


class KillOnceNet(PixelNet):
    """PixelNet that SIGKILLs the process running it at its first batch, once (``marker`` records it): a
    Dask worker dying mid-region, as out of memory would kill it."""

    def __init__(self, marker, **kwargs):
        super().__init__(**kwargs)
        self.marker = str(marker)

    def forward(self, x):
        import os
        import signal

        try:
            with open(self.marker, "x"):
                pass
        except FileExistsError:
            return super().forward(x)
        os.kill(os.getpid(), signal.SIGKILL)


def write_small_checkpoint(path):
    """A small random MANet (ResNet-18, seed 0) with LoveDA's classes and 64 px tiles: a real network that
    runs a CLI scene in about a second. Returns ``path``."""
    from geoseg.model.card import ModelCard
    from geoseg.model.checkpoint import save_checkpoint
    from geoseg.model.manet import build_manet
    from geoseg.model.presets import preset_card

    card = ModelCard.from_dict(
        {**preset_card("loveda").to_dict(), "backbone": "resnet18", "tile_size": 64, "overlap": 16}
    )
    torch.manual_seed(0)
    save_checkpoint(build_manet(card.num_classes, "resnet18"), card, path)
    return path


def write_scene(
    path, width=150, height=100, count=3, dtype="uint8", seed=0, mask=None, **profile
) -> np.ndarray:
    """Write seeded random values 0..255 as a GeoTIFF (``profile`` adds crs, transform, nodata...) and return
    them; ``mask`` (255 valid, 0 not) becomes the internal per-dataset mask."""
    data = np.random.default_rng(seed).integers(0, 256, (count, height, width)).astype(dtype)
    write_geotiff(path, data, mask=mask, **{"crs": None, "transform": None, **profile})
    return data


def write_png(path, data: np.ndarray):
    """A plain (not georeferenced) PNG, like the label tiles people download."""
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path, "w", driver="PNG", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="uint8"
    ) as dst:
        dst.write(data)
    return path


def loveda_corners(shared_data, folder, size: int):
    """``size``² top-left corners of the real LoveDA tiles 0 and 1 (labels: 0 no-data, 1..7 classes)."""
    for i in (0, 1):
        for kind in ("image", "label"):
            with rasterio.open(shared_data / "labeled" / "loveda" / f"{kind}_{i}.png") as src:
                write_png(folder / f"{kind}_{i}.png", src.read(window=((0, size), (0, size))))
    return folder


def set_tiff_compression_tag(path, code: int) -> None:
    """Rewrite the Compression tag (259) of a little-endian classic TIFF written by GDAL, so that GDAL reads
    it as a compression it cannot write (6 OJPEG, 32766 NeXT, 32809 ThunderScan, 34676 SGILog): the
    metadata opens, the pixels do not decode."""
    import struct
    from pathlib import Path

    data = bytearray(Path(path).read_bytes())
    assert data[:4] == b"II*\x00", "a little-endian classic TIFF"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        offset = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, offset)[0] == 259:
            struct.pack_into("<H", data, offset + 8, code)
    Path(path).write_bytes(data)


class NativeBf16Convolutions(TorchDispatchMode):
    """bf16 convolutions computed as a CPU with native bf16 computes them (oneDNN: bf16 operands, float32
    accumulation, one rounding of the result to bf16), through the float32 kernels.

    On a CPU without native bf16 torch emulates bf16 convolutions with kernels that round the same way (to
    within accumulation order) but are about 30x slower (MANet-R50, one 256² tile: 17 s against 0.7 s), too
    slow to check on whole scenes. Use inside ``torch.autocast``: autocast still decides what runs in bf16.
    """

    _CONVOLUTIONS = (torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._CONVOLUTIONS and args[0].dtype == torch.bfloat16:
            wide = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
            return func(*wide, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


_AUTHORS_BACKBONE = [("firstconv.", "backbone.conv1."), ("firstbn.", "backbone.bn1.")] + [
    (f"encoder{i}.", f"backbone.layer{i}.") for i in range(1, 5)
]


def write_authors_checkpoint(model, card, path):
    """``model`` (a MANet) saved as the authors' GeoSeg training saves MANet: a Lightning ``.ckpt`` whose
    ``state_dict`` holds ``net.backbone.conv1...``/``net.backbone.layerN...`` (timm names) and the rest under
    our names, for input scaled by ÷255 alone. The card's mean/std are folded into the first convolution
    (weights ÷ std) and the first BatchNorm's running mean (+ the convolution of mean/std), so it is the
    same network except within the stem's zero padding. A trained foreign checkpoint with numbers of its
    own, without a download. Returns ``path``."""
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    mean = torch.tensor(card.mean).view(1, -1, 1, 1)
    std = torch.tensor(card.std).view(1, -1, 1, 1)
    weight = state["firstconv.weight"]
    state["firstconv.weight"] = weight / std
    state["firstbn.running_mean"] = state["firstbn.running_mean"] + (weight * mean / std).sum(dim=(1, 2, 3))
    authors = {}
    for name, tensor in state.items():
        for ours, theirs in _AUTHORS_BACKBONE:
            if name.startswith(ours):
                name = theirs + name[len(ours) :]
                break
        authors["net." + name] = tensor
    torch.save({"epoch": 104, "global_step": 0, "state_dict": authors}, path)
    return path


MLM_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mlm-schema"


def stac_schema_errors(item: dict) -> list[str]:
    """Every error of ``item`` against STAC Item 1.1.0 (pystac's bundled schemas) and each extension schema
    it names, all resolved offline: MLM v1.4.0 and what it references, from ``../shared/reference``."""
    import json
    from importlib.resources import files

    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    if not MLM_SCHEMAS.is_dir():
        pytest.skip(f"MLM schema folder {MLM_SCHEMAS} is not present")
    bundled = files("pystac.validation") / "jsonschemas"
    stac = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema"
    ext = "https://stac-extensions.github.io"
    documents = {
        f"{ext}/mlm/v1.4.0/schema.json": MLM_SCHEMAS / "mlm-v1.4.0-schema.json",
        f"{ext}/classification/v1.1.0/schema.json": MLM_SCHEMAS / "classification-v1.1.0-schema.json",
        f"{ext}/raster/v1.1.0/schema.json": MLM_SCHEMAS / "raster-v1.1.0-schema.json",
        f"{ext}/processing/v1.1.0/schema.json": MLM_SCHEMAS / "processing-v1.1.0-schema.json",
        f"{ext}/processing/v1.0.0/schema.json": MLM_SCHEMAS / "processing-v1.1.0-schema.json",
        "https://geojson.org/schema/Feature.json": bundled / "geojson" / "Feature.json",
        "https://geojson.org/schema/Geometry.json": bundled / "geojson" / "Geometry.json",
        f"{stac}/data-values.json": bundled / "stac-spec" / "v1.1.0" / "data-values.json",
    }
    for name in ("item", "common", "basics", "datetime", "instrument", "licensing", "provider", "bands"):
        documents[f"{stac}/{name}.json"] = bundled / "stac-spec" / "v1.1.0" / f"{name}.json"
    schemas = {uri: json.loads(path.read_text(encoding="utf-8")) for uri, path in documents.items()}
    registry = Registry().with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7)) for uri, schema in schemas.items()
    )
    errors = []
    for uri in [f"{stac}/item.json", *item["stac_extensions"]]:
        if uri not in schemas:
            errors.append(f"{uri}: no offline copy of this schema")
            continue
        validator = jsonschema.validators.validator_for(schemas[uri])(schemas[uri], registry=registry)
        for error in validator.iter_errors(item):
            where = "/".join(str(p) for p in error.absolute_path)
            errors.append(f"{uri}: {where}: {error.message[:300]}")
    return errors


# The class rasters of the quick-look tests (plots/test_quicklook.py and cli/test_quicklook.py).
NAMES = ["building", "road", "tree", "low vegetation", "water"]
COLORS = [(230, 25, 75), (255, 225, 25), (60, 180, 75), (145, 30, 180), (0, 130, 200)]
UTM = {"crs": CRS.from_epsg(32632), "transform": Affine(0.5, 0, 400000, 0, -0.5, 5000000)}


def write_classes(path, data, georef=None, names=NAMES, colors=COLORS):
    """A class raster as geoseg predict writes it: tiled, nodata 255, colour table, names, COG overviews."""
    georef = georef if georef is not None else UTM
    tiled = path.with_name("tiled_" + path.name)
    profile = tiled_profile(data.shape[1], data.shape[0], 1, NODATA_CLASS, georef)
    with open_tiled(tiled, profile) as dst:
        dst.write(data, 1)
        write_class_metadata(dst, names, colors)
    to_cog(tiled, path)
    tiled.unlink()
    return path


def blocky_classes(height, width, seed=0, block=8):
    """Random classes 0..4 in ``block``² squares (decimated reads keep the shares), nodata on the left."""
    rng = np.random.default_rng(seed)
    small = rng.choice(5, size=(height // block + 1, width // block + 1), p=[0.4, 0.25, 0.2, 0.1, 0.05])
    data = np.kron(small, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)
    data[:, : width // 5] = NODATA_CLASS
    return data


# --- GeoTIFFs: one writer (conftest's ``make_geotiff`` fixture is its form with names under tmp_path) -----

TEST_CRS = "EPSG:32633"
NORTH_UP = Affine(0.5, 0.0, 400000.0, 0.0, -0.5, 5800000.0)


def write_geotiff(
    path,
    data,
    *,
    crs=TEST_CRS,
    transform=NORTH_UP,
    nodata=None,
    dtype=None,
    colorinterp=None,
    mask=None,
    internal_mask=True,
    classes=None,
    colormap=None,
    tags=None,
    descriptions=None,
    scales=None,
    offsets=None,
    **profile,
) -> Path:
    """A raster of ``data`` ((C, H, W) or (H, W)) on the test grid unless ``crs``/``transform`` say otherwise
    (``None``: not georeferenced); ``profile`` adds creation options, GCPs/RPCs or another ``driver``.

    What other tools store beside the pixels: ``mask`` (H, W) as an internal mask (``internal_mask=False``: a
    .msk side-car); ``classes`` ``(names, colours)`` as geoseg predict stores them
    (:func:`~geoseg.raster.classes.write_class_metadata`); ``colormap`` a band 1 colour table of another tool;
    ``tags`` dataset tags; ``descriptions``, ``scales``, ``offsets`` per band."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if dtype is not None:
        data = data.astype(dtype)
    count, height, width = data.shape
    base = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
    base.update(
        {k: v for k, v in {"crs": crs, "transform": transform, "nodata": nodata}.items() if v is not None}
    )
    base.update(profile)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=internal_mask), rasterio.open(path, "w", **base) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
        if classes is not None:
            write_class_metadata(dst, *classes)
        if colormap is not None:
            dst.write_colormap(1, colormap)
        if tags:
            dst.update_tags(**tags)
        for band, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(band, text)
        if scales is not None:
            dst.scales = scales
        if offsets is not None:
            dst.offsets = offsets
        if mask is not None:
            dst.write_mask(mask)
    return path


# --- small class and label rasters with alpha bands (evaluate, train, vectorize, quicklook) ---------------

POTSDAM_COLORS = [c.color for c in preset_card("potsdam").classes]


def classes_and_transparency(height: int = 12, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class indices 0..3 in vertical stripes, and an alpha band that hides the left quarter."""
    classes = (np.arange(width)[None, :] * 4 // width).repeat(height, 0).astype(np.uint8)
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 4] = 0
    return classes, alpha


def expected_scores(classes: np.ndarray, alpha: np.ndarray) -> tuple[int, int, list[int]]:
    visible = alpha > 0
    return int(visible.sum()), int((~visible).sum()), np.bincount(classes[visible], minlength=6).tolist()


def class_raster_with_alpha(tmp_path) -> tuple:
    """Classes 0..3 with an alpha band hiding the left quarter, as ``gdal_translate -b 1 -b mask`` writes."""
    classes, alpha = classes_and_transparency()
    path = write_geotiff(tmp_path / "masked.tif", np.stack([classes, alpha]), alpha="YES")
    return path, classes, alpha


def count_calls(monkeypatch, owner, name: str) -> list[int]:
    """Replace ``owner.name`` (a module's function) for the test by a wrapper that counts its calls into the
    returned one-item list: how tests see that an export or a calibration ran once, or not at all."""
    count = [0]
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return count
