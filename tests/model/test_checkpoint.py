"""Checkpoints: geoseg safetensors round trips, foreign formats load, bad and unsafe files are refused."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch

from geoseg.errors import CardError, CheckpointError
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import load_checkpoint, save_checkpoint
from geoseg.model.manet import build_manet
from geoseg.model.presets import preset_card


def _trained_like(backbone: str = "resnet18", classes: int = 6, seed: int = 0) -> torch.nn.Module:
    """A model with non-trivial weights everywhere (gammas and BN statistics included)."""
    torch.manual_seed(seed)
    model = build_manet(classes, backbone)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05 + (1.0 if name.endswith("running_var") else 0.0))
    return model.eval()


def _geoseg_naming(state: dict) -> dict:
    """The authors' GeoSeg toolbox names the encoder backbone.conv1/bn1/layerN and wraps everything in net."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("firstconv.", "backbone.conv1.").replace("firstbn.", "backbone.bn1.")
        for i in range(1, 5):
            key = key.replace(f"encoder{i}.", f"backbone.layer{i}.")
        renamed[f"net.{key}"] = value
    return renamed


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_geoseg_checkpoint_round_trips_weights_and_card(tmp_path):
    model = _trained_like()
    card = preset_card("vaihingen", "resnet18")
    card.accuracy = {"mean_f1": 0.9}
    path = save_checkpoint(model, card, tmp_path / "m.safetensors")
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    assert not loaded.training
    _same_outputs(model, loaded)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_half_precision_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path):
    model = _trained_like()
    card = preset_card("potsdam", "resnet18")
    full = save_checkpoint(model, card, tmp_path / "full.safetensors")
    half = save_checkpoint(model, card, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(
        loaded.state_dict()["finalconv3.weight"],
        model.state_dict()["finalconv3.weight"],
        rtol=1e-3,
        atol=1e-4,
    )


@pytest.mark.parametrize("prefix", ["", "module.", "model."])
def test_raw_state_dict_in_the_original_naming_loads_with_a_preset(tmp_path, prefix):
    model = _trained_like()
    path = tmp_path / "raw.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    loaded, card = load_checkpoint(path, preset="vaihingen")
    assert card.name == "vaihingen" and card.backbone == "resnet18"
    _same_outputs(model, loaded)


def test_geoseg_lightning_checkpoint_loads_and_infers_backbone_and_classes(tmp_path):
    model = _trained_like("resnet34", classes=8)
    checkpoint = {
        "epoch": 41,
        "global_step": 12345,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": _geoseg_naming(model.state_dict()),
        "loops": {"fit_loop": {"state_dict": {}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.8)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 6e-4}]}],
        "lr_schedulers": [{"last_epoch": 41}],
    }
    path = tmp_path / "manet.ckpt"
    torch.save(checkpoint, path)
    loaded, card = load_checkpoint(path, preset="uavid")
    assert card.backbone == "resnet34"
    assert card.num_classes == 8
    _same_outputs(model, loaded)


def test_card_file_completes_a_foreign_checkpoint(tmp_path):
    model = _trained_like(classes=2)
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    card_path = tmp_path / "card.json"
    card_path.write_text(
        json.dumps(
            {"classes": [{"name": "other", "color": [0, 0, 0]}, {"name": "solar", "color": [255, 0, 0]}]}
        )
    )
    _, card = load_checkpoint(tmp_path / "raw.pt", card=card_path)
    assert card.class_names == ["other", "solar"]
    assert card.backbone == "resnet18"  # from the weights, not the card's default


def test_card_contradicting_the_weights_is_refused(tmp_path):
    torch.save(_trained_like(classes=6).state_dict(), tmp_path / "raw.pt")
    five = ModelCard(classes=[ClassInfo(f"c{i}", (i, i, i)) for i in range(5)])
    with pytest.raises(CardError, match="lists 5 classes .* but the weights have 6 output channels"):
        load_checkpoint(tmp_path / "raw.pt", card=five)


def test_foreign_checkpoint_without_preset_or_card_says_what_to_pass(tmp_path):
    torch.save(_trained_like().state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="pass preset=NAME or card=FILE"):
        load_checkpoint(tmp_path / "raw.pt")


def test_unknown_preset_lists_the_known_ones(tmp_path):
    torch.save(_trained_like().state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CardError, match="unknown preset 'isprs'; choose one of: vaihingen, potsdam"):
        load_checkpoint(tmp_path / "raw.pt", preset="isprs")


def test_mismatched_keys_name_the_first_missing_and_unexpected(tmp_path):
    state = _trained_like().state_dict()
    state.pop("attention4.PAM.gamma")
    state["aux_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "raw.pt")
    with pytest.raises(
        CheckpointError, match=r"1 missing \(attention4.PAM.gamma\), 1 unexpected \(aux_head.weight\)"
    ):
        load_checkpoint(tmp_path / "raw.pt", preset="vaihingen")


def test_a_plain_torchvision_resnet_is_not_a_manet(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="not a MANet checkpoint"):
        load_checkpoint(tmp_path / "resnet.pth", preset="vaihingen")


class _CreatesAFile:
    """Unpickling this object would run code (creating a file) if the loader allowed it."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "evil_legacy.pth"
    with legacy.open("wb") as handle:
        pickle.dump({"state_dict": _CreatesAFile(marker)}, handle, protocol=2)
    zipped = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _CreatesAFile(marker)}, zipped)
    assert not marker.exists()
    for path in (legacy, zipped):
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(path, preset="vaihingen")
    assert not marker.exists()


def test_missing_empty_truncated_and_non_checkpoint_files_are_clear_errors(tmp_path):
    good = save_checkpoint(
        _trained_like(), preset_card("vaihingen", "resnet18"), tmp_path / "good.safetensors"
    )
    data = good.read_bytes()
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.txt").write_text("hello, I am not a checkpoint\n")
    torch.save(_trained_like().state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:50_000])
    cases = {
        "missing.safetensors": "checkpoint not found",
        "empty.safetensors": "file is empty",
        "cut.safetensors": "corrupt or truncated",
        "notes.txt": "not a checkpoint",
        "cut.pt": "corrupt or truncated",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name, preset="vaihingen")
    assert zipfile.is_zipfile(tmp_path / "full.pt")


def test_failed_save_leaves_no_file_behind(tmp_path, monkeypatch):
    import safetensors.torch

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_trained_like(), preset_card("vaihingen", "resnet18"), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_card_that_does_not_describe_the_model(tmp_path):
    with pytest.raises(CardError, match="backbone resnet50 but the model is a resnet18"):
        save_checkpoint(_trained_like(), preset_card("vaihingen"), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # safetensors' path for an old torch
@pytest.mark.parametrize("version", ["2.5.1+cu121", "1.13.0", "2.4.0a0"])
def test_an_older_torch_refuses_pickled_checkpoints_but_reads_safetensors(tmp_path, monkeypatch, version):
    model = _trained_like()
    torch.save(model.state_dict(), tmp_path / "raw.pth")
    save_checkpoint(model, preset_card("vaihingen", "resnet18"), tmp_path / "m.safetensors")
    monkeypatch.setattr(torch, "__version__", version)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "raw.pth", preset="vaihingen")
    assert str(refused.value) == (
        f"{tmp_path / 'raw.pth'}: refused: torch {version} can run code hidden in a pickled checkpoint even "
        "with weights_only=True (CVE-2025-32434); upgrade to torch>=2.6 (pip install -U 'torch>=2.6'), "
        "or use a .safetensors checkpoint"
    )
    loaded, card = load_checkpoint(tmp_path / "m.safetensors")
    assert card.backbone == "resnet18"
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert load_checkpoint(tmp_path / "raw.pth", preset="vaihingen")[1].num_classes == 6
