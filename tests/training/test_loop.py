"""geoseg.training: pairing by name, up-front checks, crops, the loss, and a short real training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers import classes_and_transparency, loveda_corners, write_geotiff, write_png

from geoseg.errors import CheckpointError, ConfigurationError, InputError
from geoseg.labels import IGNORE
from geoseg.labels.raster import LabelEncoding
from geoseg.model.architectures import ARCHITECTURES
from geoseg.model.checkpoint import load_checkpoint
from geoseg.model.presets import preset_card
from geoseg.training.dataset import CropSampler, check_pairs, expand_paths, pair_files, tile_starts
from geoseg.training.loop import TrainingConfig, state_path_for, train
from geoseg.training.losses import dice_loss, segmentation_loss, soft_cross_entropy

LOVEDA = preset_card("loveda")
RGB = ["red", "green", "blue"]
ENCODING = LabelEncoding(
    num_classes=7, colors=tuple(c.color for c in LOVEDA.classes), ignore_index=7, offset=1
)


@pytest.fixture(scope="module")
def tiles(shared_data, tmp_path_factory) -> Path:
    """128² corners of the real LoveDA tiles 0 and 1 (labels 0 = no-data, 1..7 = classes)."""
    return loveda_corners(shared_data, tmp_path_factory.mktemp("loveda"), 128)


def names(pairs):
    return [(a.name, b.name) for a, b in pairs]


# --- pairing ------------------------------------------------------------------------------------------


def test_pairs_match_on_the_varying_part_of_the_name():
    images = [Path("d/image_0.png"), Path("d/image_1.png"), Path("d/image_12.png")]
    labels = [Path("d/label_12.png"), Path("d/label_0.png"), Path("d/label_1.png")]
    assert names(pair_files(images, labels)) == [
        ("image_0.png", "label_0.png"),
        ("image_1.png", "label_1.png"),
        ("image_12.png", "label_12.png"),
    ]


def test_pairs_match_potsdam_names_with_the_role_in_the_middle():
    images = [Path("top_potsdam_2_10_RGB.tif"), Path("top_potsdam_2_11_RGB.tif")]
    labels = [Path("top_potsdam_2_11_label.tif"), Path("top_potsdam_2_10_label.tif")]
    assert names(pair_files(images, labels)) == [
        ("top_potsdam_2_10_RGB.tif", "top_potsdam_2_10_label.tif"),
        ("top_potsdam_2_11_RGB.tif", "top_potsdam_2_11_label.tif"),
    ]


def test_pairs_match_identical_stems_and_mask_suffixes():
    assert names(pair_files([Path("i/b.tif"), Path("i/a.tif")], [Path("l/a.png"), Path("l/b.png")])) == [
        ("b.tif", "b.png"),
        ("a.tif", "a.png"),
    ]
    assert names(
        pair_files([Path("area1.tif"), Path("area2.tif")], [Path("area2_mask.tif"), Path("area1_mask.tif")])
    )[0] == ("area1.tif", "area1_mask.tif")


def test_single_image_and_label_pair_directly():
    assert names(pair_files([Path("scene.tif")], [Path("truth.png")])) == [("scene.tif", "truth.png")]


def test_unpaired_files_are_named_in_one_error():
    with pytest.raises(
        InputError, match=r"images without a label: image_2\.png; labels without an image: label_3"
    ):
        pair_files([Path("image_1.png"), Path("image_2.png")], [Path("label_1.png"), Path("label_3.png")])


def test_expand_paths_takes_folders_globs_and_reports_missing_files(tiles):
    assert [p.name for p in expand_paths([tiles / "image_*.png"], "image")] == ["image_0.png", "image_1.png"]
    assert len(expand_paths([tiles], "image")) == 4
    with pytest.raises(InputError, match=r"nope\.png: image file not found"):
        expand_paths([tiles / "nope.png"], "image")


# --- checks before training ---------------------------------------------------------------------------


def test_check_pairs_counts_classes_after_the_label_offset(tiles):
    [raster] = check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, RGB, 64)
    with rasterio.open(tiles / "label_0.png") as src:
        raw = src.read(1)
    expected = [int(np.count_nonzero(raw == v + 1)) for v in range(7)]
    assert raster.class_pixels.tolist() == expected
    assert raster.label_data is not None and raster.label_data.max() < 7


def test_label_values_outside_the_classes_fail_before_training(tiles):
    no_offset = LabelEncoding(num_classes=7, ignore_index=None)
    with pytest.raises(InputError, match=r"label_0\.png: .* value\(s\) 7 that lie outside the 7 classes"):
        check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], no_offset, RGB, 64)


def test_image_smaller_than_the_crop_fails(tiles):
    with pytest.raises(InputError, match=r"image_0\.png: is 128×128 pixels, smaller than the 256-pixel crop"):
        check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, RGB, 256)


def test_label_of_another_size_fails(tiles, tmp_path):
    small = write_png(tmp_path / "label_0.png", np.ones((64, 64), np.uint8))
    with pytest.raises(InputError, match=r"image_0\.png is 128×128 pixels but .*label_0\.png is 64×64"):
        check_pairs([(tiles / "image_0.png", small)], ENCODING, RGB, 32)


def test_image_without_the_model_bands_fails_as_in_predict(tiles):
    with pytest.raises(
        InputError,
        match=r"image_0\.png: the model expects bands red,green,blue,nir but the raster's bands are "
        r"red,green,blue \(no single nir band\); choose them with bands=\[1,2,3,1\]",
    ):
        check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, [*RGB, "nir"], 32)


def test_colour_labels_decode_like_index_labels(tiles, tmp_path):
    with rasterio.open(tiles / "label_0.png") as src:
        raw = src.read(1)
    palette = np.array([(0, 0, 0)] + [c.color for c in LOVEDA.classes], dtype=np.uint8)  # 0 -> black: ignored
    colour = write_png(tmp_path / "colour.png", np.moveaxis(palette[raw], -1, 0))
    colour_encoding = LabelEncoding(num_classes=7, colors=ENCODING.colors, ignore_index=7)
    [a] = check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, RGB, 32)
    [b] = check_pairs([(tiles / "image_0.png", colour)], colour_encoding, RGB, 32)
    assert np.array_equal(a.label_data, b.label_data)


# --- crops, tiles, loss -------------------------------------------------------------------------------


def test_crops_are_reproducible_from_the_seed_and_keep_labels_aligned(tiles):
    rasters = check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, RGB, 64)
    first = CropSampler(rasters, 64, np.random.default_rng(3), scales=(1.0, 1.0)).sample(2)
    again = CropSampler(rasters, 64, np.random.default_rng(3), scales=(1.0, 1.0)).sample(2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == (2, 3, 64, 64) and first[1].shape == (2, 64, 64)
    # at scale 1 a crop is an exact window of the raster, turned and flipped: find it among the D4 variants
    image, label = first[0][0], first[1][0]
    source = torch.from_numpy(rasters[0].image_data).float()
    truth = torch.from_numpy(rasters[0].label_data).long()
    found = False
    for row in range(0, 128 - 64 + 1):
        for col in range(0, 128 - 64 + 1):
            window = source[:, row : row + 64, col : col + 64]
            for turns in range(4):
                for flip in (False, True):
                    candidate = torch.rot90(window, turns, dims=(1, 2))
                    candidate = torch.flip(candidate, dims=(2,)) if flip else candidate
                    if torch.equal(candidate, image):
                        expected = torch.rot90(truth[row : row + 64, col : col + 64], turns, dims=(0, 1))
                        expected = torch.flip(expected, dims=(1,)) if flip else expected
                        found = torch.equal(expected, label)
    assert found


def test_scaled_crops_have_the_crop_size_and_nearest_labels(tiles):
    rasters = check_pairs([(tiles / "image_0.png", tiles / "label_0.png")], ENCODING, RGB, 64)
    images, labels = CropSampler(rasters, 64, np.random.default_rng(0), scales=(0.5, 0.5)).sample(3)
    assert images.shape == (3, 3, 64, 64)
    assert set(labels.unique().tolist()) <= set(np.unique(rasters[0].label_data).tolist())


def test_tile_starts_cover_every_pixel_once():
    assert tile_starts(100, 32) == [(0, 0), (32, 0), (64, 0), (68, 28)]
    assert tile_starts(64, 32) == [(0, 0), (32, 0)]
    assert tile_starts(32, 32) == [(0, 0)]


def test_loss_ignores_ignored_pixels_and_matches_hand_values():
    logits = torch.zeros(1, 2, 1, 2)  # uniform prediction: p = 1/2 everywhere
    target = torch.tensor([[[0, IGNORE]]])
    # cross-entropy of a uniform prediction is ln 2 whatever the smoothing
    assert math.isclose(float(soft_cross_entropy(logits, target, smoothing=0.05)), math.log(2), rel_tol=1e-6)
    # Dice for class 0 over the one valid pixel: (2·0.5 + s) / (0.5 + 1 + s), class 1 absent -> left out
    s = 0.05
    assert math.isclose(float(dice_loss(logits, target, smooth=s)), 1 - (1 + s) / (1.5 + s), rel_tol=1e-6)
    all_ignored = torch.full((1, 1, 2), IGNORE)
    assert float(segmentation_loss(logits, all_ignored)) == 0.0


def test_confident_correct_prediction_has_a_small_loss():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 20
    assert float(segmentation_loss(logits, target, smoothing=0.0)) < 1e-6


# --- the loop -----------------------------------------------------------------------------------------


def small_config(**overrides) -> TrainingConfig:
    values = dict(crop=64, batch_size=4, steps=12, label_offset=1, device="cpu", seed=0, state_every_s=0.0)
    values.update(overrides)
    return TrainingConfig(**values)


def test_short_real_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tiles, tmp_path):
    output = tmp_path / "model.safetensors"
    result = train(
        [tiles / "image_0.png"],
        [tiles / "label_0.png"],
        output,
        card=LOVEDA,
        backbone="resnet18",
        val_images=[tiles / "image_1.png"],
        val_labels=[tiles / "label_1.png"],
        config=small_config(batch_size=2, lr=1e-3, state_every_s=60.0),
    )
    assert result.steps == 12
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3])
    model, card = load_checkpoint(output)
    assert card.backbone == "resnet18" and card.class_names == LOVEDA.class_names
    assert card.training["steps"] == result.validation["step"]
    assert card.training["images"] == ["image_0.png"] and card.training["validation_images"] == [
        "image_1.png"
    ]
    assert set(card.accuracy["validation"]) >= {"overall_accuracy", "mean_f1", "mean_iou", "per_class_iou"}
    assert card.gsd == 0.3
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7, 64, 64)
    assert state_path_for(output).is_file()


@pytest.mark.slow
def test_a_model_trained_from_random_weights_claims_no_dataset_or_licence_of_the_preset(tiles, tmp_path):
    """The preset supplies classes, bands and scaling; the card describes what this run trained on."""
    output = tmp_path / "mine.safetensors"
    train([tiles / "image_0.png"], [tiles / "label_0.png"], output, card=LOVEDA, config=small_config(steps=1))
    card = load_checkpoint(output)[1]
    assert (card.name, card.data, card.license) == (
        "mine",
        "geoseg train on 1 labelled image(s): image_0.png",
        "",
    )
    assert card.class_names == LOVEDA.class_names and card.bands == LOVEDA.bands


@pytest.mark.slow
def test_weights_derived_from_an_initial_model_carry_its_licence(tiles, tmp_path):
    from geoseg.model.checkpoint import save_checkpoint
    from geoseg.model.manet import build_manet

    start = tmp_path / "loveda_r18.safetensors"
    save_checkpoint(build_manet(7, "resnet18"), preset_card("loveda", "resnet18"), start)
    output = tmp_path / "finetuned.safetensors"
    train(
        [tiles / "image_0.png"],
        [tiles / "label_0.png"],
        output,
        card=LOVEDA,
        init=start,
        config=small_config(steps=1),
    )
    card = load_checkpoint(output)[1]
    assert card.license == (
        "CC BY-NC-SA 4.0: no commercial use, share alike "
        "(inherited from the initial weights loveda_r18.safetensors)"
    )
    assert card.data == "geoseg train on 1 labelled image(s): image_0.png" and card.name == "finetuned"


@pytest.mark.slow
def test_a_users_card_states_its_own_data_and_licence(tiles, tmp_path):
    from geoseg.model.card import ModelCard

    own = ModelCard.from_dict(
        {**LOVEDA.to_dict(), "name": "", "data": "Kadaster 2023 orthos", "license": "CC0"}
    )
    output = tmp_path / "own.safetensors"
    train([tiles / "image_0.png"], [tiles / "label_0.png"], output, card=own, config=small_config(steps=1))
    card = load_checkpoint(output)[1]
    assert (card.name, card.data, card.license) == ("own", "Kadaster 2023 orthos", "CC0")


def test_interrupted_run_resumes_to_the_same_weights(tiles, tmp_path):
    pairs = dict(images=[tiles / "image_0.png", tiles / "image_1.png"])
    labels = [tiles / "label_0.png", tiles / "label_1.png"]
    config = small_config(steps=6, batch_size=2)  # 2·128² px / (64²·2) = 4 steps per epoch
    straight = tmp_path / "straight.safetensors"
    train(pairs["images"], labels, straight, card=LOVEDA, backbone="resnet18", config=config)

    def stop_at_step_5(event):
        if event.phase == "train" and event.step == 5:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(
            pairs["images"],
            labels,
            resumed,
            card=LOVEDA,
            backbone="resnet18",
            config=config,
            progress=stop_at_step_5,
        )
    assert load_checkpoint(resumed)[1].training["steps"] == 4  # written at the end of epoch 1
    result = train(
        pairs["images"],
        labels,
        resumed,
        card=LOVEDA,
        backbone="resnet18",
        config=config,
        resume=state_path_for(resumed),
    )
    assert result.steps == 6 and len(result.losses) == 2
    a, _ = load_checkpoint(straight)
    b, _ = load_checkpoint(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def test_existing_output_needs_overwrite_before_any_work(tiles, tmp_path):
    output = tmp_path / "model.safetensors"
    output.write_bytes(b"x")
    with pytest.raises(Exception, match="output exists; pass overwrite=True"):
        train([tiles / "image_0.png"], [tiles / "label_0.png"], output, card=LOVEDA, config=small_config())


def test_resume_with_other_classes_is_refused(tiles, tmp_path):
    output = tmp_path / "m.safetensors"
    train(
        [tiles / "image_0.png"],
        [tiles / "label_0.png"],
        output,
        card=LOVEDA,
        backbone="resnet18",
        config=small_config(steps=1),
    )
    other = preset_card("potsdam")
    with pytest.raises(ConfigurationError, match="the interrupted run had classes"):
        train(
            [tiles / "image_0.png"],
            [tiles / "label_0.png"],
            output,
            card=other,
            backbone="resnet18",
            config=small_config(steps=2),
            resume=state_path_for(output),
        )


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigurationError, match="multiple of 32"):
        small_config(crop=100).check(ARCHITECTURES["manet"])
    with pytest.raises(ConfigurationError, match="either epochs=N or steps=N"):
        small_config(epochs=2).check(ARCHITECTURES["manet"])


def test_init_copies_matching_tensors_from_a_torchvision_resnet(tmp_path):
    import torchvision

    from geoseg.model.manet import build_manet
    from geoseg.training.loop import initialise_from

    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    model = build_manet(7, "resnet18")
    assert (
        initialise_from(model, tmp_path / "resnet18.pth").note == "resnet18.pth (120 of 242 tensors)"
    )  # all but fc
    assert torch.equal(model.firstconv.weight, resnet.conv1.weight)
    assert torch.equal(model.encoder4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)


def test_val_fraction_holds_out_whole_images(tiles, tmp_path):
    output = tmp_path / "m.safetensors"
    result = train(
        [tiles / "image_0.png", tiles / "image_1.png"],
        [tiles / "label_0.png", tiles / "label_1.png"],
        output,
        card=LOVEDA,
        backbone="resnet18",
        config=small_config(steps=1, val_fraction=0.5),
    )
    assert (result.pairs, result.validation_pairs) == (1, 1)
    training = result.card.training
    assert sorted(training["images"] + training["validation_images"]) == ["image_0.png", "image_1.png"]


class Payload:
    """Any class outside plain data: unpickling it would import and run code."""


def test_state_file_holding_code_objects_is_refused(tiles, tmp_path):
    torch.save({"format": 1, "evil": Payload()}, tmp_path / "m.state.pt")
    torch.save({"format": 1, "step": 3}, tmp_path / "other.state.pt")
    common = dict(card=LOVEDA, backbone="resnet18", config=small_config(steps=2))
    with pytest.raises(CheckpointError, match=r"m\.state\.pt: refused: not a plain geoseg training state"):
        train([tiles / "image_0.png"], [tiles / "label_0.png"], tmp_path / "m.safetensors",
              resume=tmp_path / "m.state.pt", **common)  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"other\.state\.pt: not a geoseg training state .*missing best,"
    ):
        train([tiles / "image_0.png"], [tiles / "label_0.png"], tmp_path / "other.safetensors",
              resume=tmp_path / "other.state.pt", **common)  # fmt: skip


def test_palette_label_in_its_own_colour_order_trains_on_the_classes_its_colours_show(tmp_path):
    colors = [tuple(c.color) for c in LOVEDA.classes]
    classes = np.repeat(np.arange(7, dtype=np.uint8), 64 * 64 // 7 + 1)[: 64 * 64].reshape(64, 64)
    order = [6, 5, 4, 3, 2, 1, 0]  # stored value k is drawn in the colour of class order[k]
    unplaced = dict(crs=None, transform=None)
    write_geotiff(tmp_path / "a.tif", np.full((3, 64, 64), 128, np.uint8), **unplaced)
    write_geotiff(
        tmp_path / "a_mask.tif",
        np.array(order, np.uint8)[classes],  # class c stored as order[c] (order is its own inverse)
        colormap={k: (*colors[order[k]], 255) if k < 7 else (0, 0, 0, 255) for k in range(256)},
        **unplaced,
    )
    [raster] = check_pairs([(tmp_path / "a.tif", tmp_path / "a_mask.tif")], ENCODING, RGB, 64)
    assert raster.label_data.tolist() == classes.tolist()
    assert raster.class_pixels.tolist() == np.bincount(classes.ravel(), minlength=7).tolist()


def test_train_refuses_an_output_that_is_one_of_its_inputs(tmp_path):
    """``train(..., output=image, overwrite=True)`` trained, then wrote the checkpoint over the image it
    trained on (the CLI's .safetensors rule does not protect the API, nor an image named .safetensors)."""
    from geoseg.errors import OutputError
    from geoseg.training.loop import TrainingConfig, train

    classes, _ = classes_and_transparency(32, 32)
    image = write_geotiff(tmp_path / "a.tif", np.full((3, 32, 32), 100, np.uint8))
    label = write_geotiff(tmp_path / "a_mask.tif", classes[None])
    before = image.read_bytes()
    config = TrainingConfig(crop=32, batch_size=1, steps=1)

    with pytest.raises(OutputError, match="is also an input of this command"):
        train([image], [label], image, card=preset_card("potsdam"), architecture="macunet", config=config,
              overwrite=True)  # fmt: skip

    assert image.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "a_mask.tif"]
