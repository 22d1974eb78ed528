"""The architecture registry is the one source of what each network is: its name, label, backbones, default
backbone and input multiple. The card, presets, builders, CLI choices, training and the tile grid follow it,
and it imports no torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from geoseg.cli.options import flags_for_parameters
from geoseg.cli.predict import predict as predict_command
from geoseg.cli.train import train as train_command
from geoseg.errors import CardError, ConfigurationError
from geoseg.model.architectures import (
    ARCHITECTURES,
    BACKBONES,
    get_architecture,
    network_label,
)
from geoseg.model.build import build_model
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.presets import preset_card
from geoseg.training.loop import TrainingConfig

CLASSES = [ClassInfo("a", (0, 0, 0)), ClassInfo("b", (255, 255, 255))]
SMALL_BACKBONE = {"manet": "resnet18"}  # the default otherwise: the test only needs the data flow


def _imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement`` (this test's imports do not count)."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def _build(name: str, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, classes, backbone=SMALL_BACKBONE.get(name)).eval()


# --- the registry itself -----------------------------------------------------------------------------------


def test_the_registry_and_the_card_and_presets_import_no_torch():
    modules = _imported_after(
        "import geoseg.model.architectures, geoseg.model.card, geoseg.model.presets, geoseg.cli.train"
    )
    assert "geoseg.model.architectures" in modules
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}


@pytest.mark.slow
def test_the_siblings_take_shared_blocks_from_layers_not_from_manet():
    modules = _imported_after("import geoseg.model.macunet, geoseg.model.maresunet")
    assert "geoseg.model.layers" in modules
    assert "geoseg.model.manet" not in modules


def test_the_registry_holds_the_three_published_networks():
    assert {
        name: (spec.label, spec.backbones, spec.default_backbone, spec.input_multiple)
        for name, spec in ARCHITECTURES.items()
    } == {
        "manet": ("MANet", ("resnet18", "resnet34", "resnet50", "resnet101"), "resnet50", 32),
        "macunet": ("MACU-Net", (None,), None, 16),
        "maresunet": ("MAResU-Net", ("resnet34",), "resnet34", 32),
    }
    assert BACKBONES == ("resnet18", "resnet34", "resnet50", "resnet101")
    assert [network_label(n, s.default_backbone) for n, s in ARCHITECTURES.items()] == [
        "MANet (resnet50)",
        "MACU-Net",
        "MAResU-Net (resnet34)",
    ]
    with pytest.raises(ConfigurationError, match="unknown architecture 'unet'; choose one of manet, macunet"):
        get_architecture("unet")


# --- builders and the input multiple ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_builder_gives_full_size_logits_for_an_input_of_exactly_its_multiple(name):
    multiple = ARCHITECTURES[name].input_multiple
    model = _build(name)
    with torch.no_grad():
        assert model(torch.rand(1, 3, multiple, 2 * multiple)).shape == (1, 3, multiple, 2 * multiple)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_network_refuses_other_sizes_naming_the_padded_size(name):
    spec = ARCHITECTURES[name]
    size = spec.input_multiple * 3 // 2  # a multiple of half the input multiple, not of the multiple
    with pytest.raises(
        ConfigurationError,
        match=f"{spec.label} needs height and width that are multiples of {spec.input_multiple}, "
        f"got {size}×{spec.input_multiple}; pad to {2 * spec.input_multiple}×{spec.input_multiple}",
    ):
        _build(name)(torch.rand(1, 3, size, spec.input_multiple))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_input_multiple_is_the_smallest_the_network_really_needs(name, monkeypatch):
    """Without its size check, each network fails or returns logits of another size at half its multiple:
    the registry's value is the network's total downsampling (MACU-Net: four 2×2 max-pools, 16)."""
    spec = ARCHITECTURES[name]
    module = importlib.import_module(spec.builder.split(":")[0])
    monkeypatch.setattr(module, "check_input_size", lambda *args: None)
    half = spec.input_multiple // 2
    with torch.no_grad():
        try:
            shape = tuple(_build(name)(torch.rand(1, 3, half, half)).shape)
        except RuntimeError:
            shape = None
    assert shape != (1, 3, half, half)


def test_the_builder_takes_the_default_backbone_and_refuses_a_foreign_one():
    assert build_model("manet", 2).backbone_name == ARCHITECTURES["manet"].default_backbone
    with pytest.raises(ConfigurationError, match=r"MAResU-Net cannot have backbone 'resnet18'"):
        build_model("maresunet", 2, backbone="resnet18")


# --- what reads the registry ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_card_accepts_exactly_the_registrys_backbones(name):
    spec = ARCHITECTURES[name]
    for backbone in spec.backbones:
        assert ModelCard(CLASSES, architecture=name, backbone=backbone).backbone == backbone
    assert ModelCard(CLASSES, architecture=name).backbone == spec.default_backbone
    for backbone in set(BACKBONES) - set(spec.backbones):
        with pytest.raises(CardError, match=f"backbone '{backbone}' does not fit architecture {name}"):
            ModelCard(CLASSES, architecture=name, backbone=backbone)


def test_tile_and_crop_sizes_follow_the_networks_input_multiple():
    """48 px suits MACU-Net (16) but not MANet or MAResU-Net (32): in the card, the tile grid and training."""
    assert ModelCard(CLASSES, architecture="macunet", tile_size=48, overlap=16).tile_size == 48
    TrainingConfig(crop=48).check(ARCHITECTURES["macunet"])
    ARCHITECTURES["macunet"].check_tile(48)
    for name, label in [("manet", "MANet"), ("maresunet", "MAResU-Net")]:
        with pytest.raises(CardError, match=f"tile_size must be a positive multiple of 32 \\({label}'s"):
            ModelCard(CLASSES, architecture=name, tile_size=48, overlap=16)
        with pytest.raises(
            ConfigurationError, match=f"crop=\\d+: give a positive multiple of 32 \\({label}'s"
        ):
            TrainingConfig(crop=48).check(ARCHITECTURES[name])
        with pytest.raises(ConfigurationError) as refused:
            ARCHITECTURES[name].check_tile(48)
        assert (
            str(refused.value)
            == f"tile=48: give a positive multiple of 32 ({label}'s input multiple), e.g. 32 or 64"
        )


def test_command_line_choices_list_exactly_the_registrys_entries():
    options = {param.name: param for param in train_command.params}
    assert list(options["architecture"].type.choices) == list(ARCHITECTURES)
    assert list(options["backbone"].type.choices) == list(BACKBONES)


def test_one_tile_check_serves_the_command_line_and_the_library_with_the_networks_multiple():
    """Before: the CLI refused --tile 100 as no multiple of 16 ("try 96"), the library tile=100 as no multiple
    of 32; now the network's check alone, named as the parameter, shown as the flag."""
    tile = {param.name: param for param in predict_command.params}["tile"]
    assert tile.callback is None  # no parse-time check of its own
    with pytest.raises(ConfigurationError) as refused:
        ARCHITECTURES["manet"].check_tile(100)
    assert flags_for_parameters(str(refused.value)) == (
        "--tile 100: give a positive multiple of 32 (MANet's input multiple), e.g. 96 or 128"
    )


# --- presets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_preset_for_another_architecture_takes_that_architectures_default_backbone(name):
    card = preset_card("vaihingen", architecture=name)
    assert (card.architecture, card.backbone) == (name, ARCHITECTURES[name].default_backbone)
    assert card.bands == ["nir", "red", "green"] and card.tile_size == 512
