"""One builder for the three networks, and checkpoints that say (or show by their keys) which one they hold:
recognition from raw and DataParallel dicts, the card's architecture, the siblings' authors' input scaling."""

from __future__ import annotations

import json

import pytest
import torch

from geoseg.errors import CardError, CheckpointError, ConfigurationError
from geoseg.model.build import build_model
from geoseg.model.card import ModelCard
from geoseg.model.checkpoint import infer_architecture, load_checkpoint, save_checkpoint
from geoseg.model.macunet import MACUNet
from geoseg.model.manet import MANet
from geoseg.model.maresunet import MAResUNet
from geoseg.model.presets import preset_card


def _trained_like(architecture: str, classes: int = 6, bands: int = 3, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (attention gammas and BatchNorm statistics included)."""
    torch.manual_seed(seed)
    backbone = "resnet18" if architecture == "manet" else None
    model = build_model(architecture, classes, backbone=backbone, in_channels=bands)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05 + (1.0 if name.endswith("running_var") else 0.0))
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, bands: int = 3) -> None:
    x = torch.rand(1, bands, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


# --- building -------------------------------------------------------------------------------------------


def test_build_model_makes_each_network_with_its_default_backbone():
    manet = build_model("manet", 6)
    assert isinstance(manet, MANet) and manet.backbone_name == "resnet50"
    assert sum(p.numel() for p in manet.parameters()) == 35_860_622
    assert isinstance(build_model("macunet", 6), MACUNet)
    maresunet = build_model("maresunet", 6, backbone="resnet34")
    assert isinstance(maresunet, MAResUNet)
    assert sum(p.numel() for p in maresunet.parameters()) == 26_276_510
    assert tuple(build_model("macunet", 2, in_channels=4).state_dict()["conv1.0.squre.weight"].shape) == (
        16,
        4,
        3,
        3,
    )


@pytest.mark.parametrize(
    "architecture, backbone, message",
    [
        ("unet", None, "unknown architecture 'unet'; choose one of manet, macunet, maresunet"),
        ("macunet", "resnet18", r"MACU-Net cannot have backbone 'resnet18' \(allowed: none\)"),
        ("maresunet", "resnet50", r"MAResU-Net cannot have backbone 'resnet50' \(allowed: resnet34\)"),
    ],
)
def test_impossible_networks_are_one_line_errors(architecture, backbone, message):
    with pytest.raises(ConfigurationError, match=message):
        build_model(architecture, 6, backbone=backbone)


# --- recognising a state dict ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize(
    "architecture, classes, bands, backbone",
    [("macunet", 5, 4, None), ("maresunet", 7, 3, "resnet34"), ("manet", 6, 3, "resnet18")],
)
def test_raw_and_dataparallel_dicts_load_as_their_network(
    tmp_path, prefix, architecture, classes, bands, backbone
):
    model = _trained_like(architecture, classes, bands)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, tmp_path / "netG.pth")
    card = ModelCard.from_dict(
        {
            "classes": [{"name": f"c{i}", "color": [i, i, i]} for i in range(classes)],
            "bands": [f"b{i}" for i in range(bands)],
            "architecture": architecture,
        }
    )
    loaded, loaded_card = load_checkpoint(tmp_path / "netG.pth", card=card)
    assert type(loaded) is type(model)
    assert (loaded_card.architecture, loaded_card.backbone) == (architecture, backbone)
    _same_outputs(model, loaded, bands)


def test_manet_and_maresunet_share_attention_names_but_are_told_apart():
    """MANet-ResNet-34 and MAResU-Net have identical attentionN.PAM.* keys and shapes, not the same maths."""
    manet = build_model("manet", 6, backbone="resnet34").state_dict()
    maresunet = build_model("maresunet", 6).state_dict()
    pam = [k for k in maresunet if ".PAM." in k]
    assert len(pam) == 28 and all(tuple(manet[k].shape) == tuple(maresunet[k].shape) for k in pam)
    assert infer_architecture(manet) == ("manet", "resnet34", 6, 3)
    assert infer_architecture(maresunet) == ("maresunet", "resnet34", 6, 3)
    assert infer_architecture(build_model("macunet", 9, in_channels=2).state_dict()) == (
        "macunet",
        None,
        9,
        2,
    )


def test_a_state_dict_of_none_of_the_three_is_one_line(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(
        CheckpointError, match=r"x.pth: not a MANet checkpoint \(nor MACU-Net or MAResU-Net\)"
    ):
        load_checkpoint(tmp_path / "x.pth", preset="vaihingen")


def test_a_macunet_dict_without_its_head_names_the_missing_key(tmp_path):
    state = _trained_like("macunet").state_dict()
    del state["conv10.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"MACU-Net: missing conv10.weight"):
        load_checkpoint(tmp_path / "cut.pth", preset="vaihingen")


# --- cards ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["macunet", "maresunet"])
def test_a_converted_sibling_gets_the_authors_scaling_and_the_presets_classes(tmp_path, architecture):
    torch.save(_trained_like(architecture).state_dict(), tmp_path / "netG.pth")
    _, card = load_checkpoint(tmp_path / "netG.pth", preset="vaihingen")
    assert card.architecture == architecture
    assert card.value_range == (0.0, 255.0)
    assert card.mean == [0.0, 0.0, 0.0] and card.std == [1.0, 1.0, 1.0]  # ÷255 only, as the authors trained
    assert card.class_names == preset_card("vaihingen").class_names
    assert card.bands == ["nir", "red", "green"]
    manet_card = preset_card("vaihingen", "resnet18")
    assert manet_card.mean != card.mean  # MANet keeps ImageNet's


def test_a_card_naming_another_architecture_than_the_weights_is_one_clear_error(tmp_path):
    torch.save(_trained_like("macunet").state_dict(), tmp_path / "netG.pth")
    card = tmp_path / "card.json"
    card.write_text(json.dumps(preset_card("vaihingen", None, architecture="maresunet").to_dict()))
    with pytest.raises(
        CardError,
        match=r"netG.pth: the card says architecture maresunet but the weights are a MACU-Net; "
        r'set "architecture": "macunet" in the card',
    ):
        load_checkpoint(tmp_path / "netG.pth", card=card)


def test_sibling_checkpoints_round_trip_through_safetensors_with_their_card(tmp_path):
    for architecture in ("macunet", "maresunet"):
        model = _trained_like(architecture)
        card = preset_card("potsdam", None, architecture=architecture)
        path = save_checkpoint(model, card, tmp_path / f"{architecture}.safetensors")
        loaded, loaded_card = load_checkpoint(path)
        assert loaded_card == card and loaded_card.architecture == architecture
        _same_outputs(model, loaded)


def test_save_refuses_a_card_of_another_architecture(tmp_path):
    with pytest.raises(CardError, match="card says architecture manet but the model is a MAResU-Net"):
        save_checkpoint(_trained_like("maresunet"), preset_card("potsdam", "resnet34"), tmp_path / "m.st")
    assert list(tmp_path.iterdir()) == []


def test_card_backbones_must_fit_the_architecture():
    assert preset_card("loveda", None, architecture="macunet").backbone is None
    assert preset_card("loveda", None, architecture="maresunet").backbone == "resnet34"
    with pytest.raises(CardError, match=r"backbone 'resnet50' does not fit architecture macunet"):
        preset_card("loveda", "resnet50", architecture="macunet")
    with pytest.raises(CardError, match="architecture 'unet' is not one of manet, macunet, maresunet"):
        ModelCard.from_dict({**preset_card("loveda").to_dict(), "architecture": "unet"})


def test_init_from_a_macunet_checkpoint_copies_every_tensor_including_its_own_conv1(tmp_path):
    """MACU-Net's ``conv1.*`` is its first stage, not a torchvision stem to be renamed ``firstconv.*``."""
    from geoseg.training.loop import initialise_from

    source = _trained_like("macunet", classes=6)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "netG.pth")
    target = build_model("macunet", 6)
    assert initialise_from(target, tmp_path / "netG.pth").note == "netG.pth (339 of 339 tensors)"
    _same_outputs(source, target)
