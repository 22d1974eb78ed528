"""Training reads imagery exactly as predict does: bands chosen by name or --bands, masks (alpha, internal,
nodata) as ignored pixels, predict's value-range rules recorded in the card, and evaluate's grid check."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import POTSDAM_COLORS, PixelNet, classes_and_transparency, expected_scores, write_geotiff
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.errors import InputError
from geoseg.labels import IGNORE
from geoseg.labels.raster import LabelEncoding
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import load_checkpoint
from geoseg.training import dataset
from geoseg.training.dataset import CropSampler, check_pairs, value_range_for
from geoseg.training.loop import TrainingConfig, train, validate
from geoseg.training.losses import segmentation_loss

SIZE = 64
RGB = ["red", "green", "blue"]
CRS = "EPSG:32631"
TRANSFORM = from_origin(500000.0, 5800000.0, 0.5, 0.5)
CARD = ModelCard(
    classes=[ClassInfo("ground", (255, 255, 255)), ClassInfo("building", (255, 0, 0))],
    bands=RGB,
    tile_size=32,
    overlap=0,
)
ENCODING = LabelEncoding(num_classes=2, colors=tuple(c.color for c in CARD.classes))
LABELS = (np.indices((SIZE, SIZE)).sum(axis=0) % 2).astype(np.uint8)  # a checkerboard of both classes
INVALID = np.zeros((SIZE, SIZE), bool)
INVALID[:, :24] = True  # the left 24 columns hold no data


def geotiff(path, data, *, crs=CRS, transform=TRANSFORM, **options):
    """``data`` on this module's grid unless ``crs``/``transform`` say otherwise; ``options`` (``mask``,
    ``descriptions``, creation options) as write_geotiff's."""
    return write_geotiff(path, data, crs=crs, transform=transform, **options)


def image_data(count=3, dtype="uint8", high=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, high, (count, SIZE, SIZE)).astype(dtype)


def masked_image(tmp_path, kind: str):
    """An RGB scene whose left columns are invalid by an alpha band, an internal mask or the nodata value."""
    data = image_data()
    if kind == "alpha":
        alpha = np.where(INVALID, 0, 255).astype(np.uint8)
        return geotiff(
            tmp_path / "image.tif",
            np.concatenate([data, alpha[None]]),
            photometric="RGB",
            alpha="YES",
        )
    if kind == "mask":
        return geotiff(tmp_path / "image.tif", data, photometric="RGB", mask=np.where(INVALID, 0, 255))
    data[:, INVALID] = 0
    return geotiff(tmp_path / "image.tif", data, photometric="RGB", nodata=0)


@pytest.mark.parametrize("kind", ["alpha", "mask", "nodata"])
@pytest.mark.parametrize("cached", [True, False])
def test_invalid_image_pixels_become_ignored_labels(tmp_path, monkeypatch, kind, cached):
    if not cached:
        monkeypatch.setattr(dataset, "CACHE_PIXELS", 0)  # read by windows, as large rasters are
    image = masked_image(tmp_path, kind)
    label = geotiff(tmp_path / "label.tif", LABELS)
    [raster] = check_pairs([(image, label)], ENCODING, RGB, 32)
    assert raster.indexes == [1, 2, 3]  # the alpha band is a mask, never data
    expected = np.where(INVALID, IGNORE, LABELS)
    assert np.array_equal(raster.class_pixels, np.bincount(LABELS[~INVALID], minlength=2))
    pixels, labels = raster.read(0, 0, SIZE)
    assert pixels.shape == (3, SIZE, SIZE)
    assert np.array_equal(labels, expected)
    pixels, labels = raster.read(8, 16, 32)
    assert np.array_equal(labels, expected[8:40, 16:48])


def test_masked_pixels_count_in_neither_the_loss_nor_the_validation_scores(tmp_path):
    image = masked_image(tmp_path, "alpha")
    label = geotiff(tmp_path / "label.tif", LABELS)
    rasters = check_pairs([(image, label)], ENCODING, RGB, 32)
    sampler = CropSampler(rasters, 32, np.random.default_rng(0), scales=(1.0, 1.0))
    batch, target = sampler.sample(4)
    masked = target == IGNORE
    assert 0 < int(masked.sum()) < masked.numel()
    logits = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[:, 0][masked] += 50.0  # any output where the image has no data
    assert torch.equal(segmentation_loss(changed, target), segmentation_loss(logits, target))

    scores = validate(PixelNet(3, 2), rasters, CARD, 32, 2, torch.device("cpu"), None)
    assert scores["pixels"] == int((~INVALID).sum()) == SIZE * (SIZE - 24)


def test_an_rgba_orthophoto_trains_with_alpha_as_the_mask(tmp_path):
    image = masked_image(tmp_path, "alpha")
    label = geotiff(tmp_path / "label.tif", LABELS)
    (tmp_path / "val").mkdir()
    val_image, val_label = (shutil.copy(path, tmp_path / "val") for path in (image, label))
    output = tmp_path / "m.safetensors"
    config = TrainingConfig(crop=32, batch_size=2, steps=2, device="cpu", state_every_s=0.0)
    result = train(
        [image], [label], output, card=CARD, backbone="resnet18", val_images=[val_image],
        val_labels=[val_label], config=config,
    )  # fmt: skip
    assert result.validation["pixels"] == SIZE * (SIZE - 24)
    _, card = load_checkpoint(output)
    assert card.bands == RGB and card.value_range == (0.0, 255.0)
    assert card.training["class_pixels"] == {"ground": 1280, "building": 1280}


def test_bands_are_chosen_by_name_or_by_number_as_in_predict(tmp_path):
    names = ["NIR", "Red", "Green", "Blue"]
    image = geotiff(tmp_path / "image.tif", image_data(4), descriptions=names, photometric="MINISBLACK")
    label = geotiff(tmp_path / "label.tif", LABELS)
    assert check_pairs([(image, label)], ENCODING, RGB, 32)[0].indexes == [2, 3, 4]
    assert check_pairs([(image, label)], ENCODING, RGB, 32, bands=[1, 2, 3])[0].indexes == [1, 2, 3]
    with pytest.raises(
        InputError, match=r"image\.tif: bands=\[5, 2, 3\]: 5 out of range; the raster has bands 1\.\.4"
    ):
        check_pairs([(image, label)], ENCODING, RGB, 32, bands=[5, 2, 3])


@pytest.mark.parametrize(
    ("label_place", "message"),
    [
        (dict(transform=from_origin(500010.0, 5800000.0, 0.5, 0.5)), "different transforms: .* 20 px apart"),
        (dict(crs="EPSG:32632"), "image.tif is in EPSG:32631 but .*label.tif is in EPSG:32632"),
    ],
)
def test_a_label_on_another_grid_is_refused_even_when_sizes_match(tmp_path, label_place, message):
    image = geotiff(tmp_path / "image.tif", image_data())
    label = geotiff(tmp_path / "label.tif", LABELS, **label_place)
    with pytest.raises(InputError, match=message):
        check_pairs([(image, label)], ENCODING, RGB, 32)


def test_a_label_in_pixel_space_pairs_with_a_georeferenced_image(tmp_path):
    image = geotiff(tmp_path / "image.tif", image_data())
    label = geotiff(tmp_path / "label.tif", LABELS, crs=None, transform=None)
    assert len(check_pairs([(image, label)], ENCODING, RGB, 32)) == 1


def uint16_pair(tmp_path, name="a", seed=0):
    image = geotiff(tmp_path / f"{name}.tif", image_data(dtype="uint16", high=4000, seed=seed))
    return image, geotiff(tmp_path / f"{name}_label.tif", LABELS)


def test_uint16_imagery_for_an_8_bit_card_is_refused_not_clamped(tmp_path):
    rasters = check_pairs([uint16_pair(tmp_path)], ENCODING, RGB, 32)
    with pytest.raises(
        InputError, match=r"a\.tif: uint16 data but the model expects 8-bit values 0\.\.255; pass "
    ):
        value_range_for(rasters, None, CARD.value_range)
    assert value_range_for(rasters, (0.0, 4000.0), CARD.value_range) == (0.0, 4000.0)
    assert value_range_for(rasters, None, (0.0, 3000.0)) == (0.0, 3000.0)  # a card trained on 16-bit


def test_scale_auto_is_one_percentile_range_pooled_over_the_images(tmp_path):
    pairs = [uint16_pair(tmp_path, "a", seed=1), uint16_pair(tmp_path, "b", seed=2)]
    rasters = check_pairs(pairs, ENCODING, RGB, 32)
    pooled = np.concatenate([image_data(dtype="uint16", high=4000, seed=s).ravel() for s in (1, 2)])
    expected = tuple(np.percentile(pooled, [2, 98]).tolist())
    assert value_range_for(rasters, "auto", CARD.value_range) == pytest.approx(expected)


def test_cli_train_refuses_uint16_without_scale_and_records_the_scale_used(tmp_path):
    image, label = uint16_pair(tmp_path)
    card_path = tmp_path / "card.json"
    card_path.write_text(CARD.to_json())
    args = ["train", "--images", image, "--labels", label, "--card", card_path, "--backbone", "resnet18",
            "--crop", "32", "--batch-size", "2", "--steps", "1", "--device", "cpu", "-q"]  # fmt: skip
    refused = CliRunner().invoke(cli, [*map(str, args), "-o", str(tmp_path / "no.safetensors")])
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: ") and len(refused.output.strip().splitlines()) == 1
    assert "uint16 data but the model expects 8-bit values" in refused.output
    assert not (tmp_path / "no.safetensors").exists()

    output = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, [*map(str, args), "--scale", "0,4000", "-o", str(output)])
    assert result.exit_code == 0, result.output
    _, card = load_checkpoint(output)
    assert card.value_range == (0.0, 4000.0)
    assert card.training["value_range_from"] == "--scale"


def test_training_pairs_read_colour_labels_with_the_alpha_band_first(tmp_path):
    """``train`` decodes labels with the same function: the alpha-first colour label trains on its colours,
    and its transparent pixels count in no class."""
    from geoseg.labels.raster import LabelEncoding
    from geoseg.training.dataset import check_pairs

    classes, alpha = classes_and_transparency(32, 32)
    rgb = np.array(POTSDAM_COLORS, np.uint8)[classes].transpose(2, 0, 1)
    rgb[:, alpha == 0] = 0
    image = write_geotiff(tmp_path / "a.tif", np.full((3, 32, 32), 100, np.uint8))
    label = write_geotiff(
        tmp_path / "a_label.tif",
        np.concatenate([alpha[None], rgb]),
        colorinterp=[ColorInterp.alpha, ColorInterp.red, ColorInterp.green, ColorInterp.blue],
    )
    encoding = LabelEncoding(num_classes=6, colors=tuple(tuple(c) for c in POTSDAM_COLORS))

    (raster,) = check_pairs([(image, label)], encoding, ["red", "green", "blue"], crop=32)

    assert raster.class_pixels.tolist() == expected_scores(classes, alpha)[2]
