"""Model cards: JSON round trips, presets match the published setups, malformed cards name the field."""

from __future__ import annotations

import json

import pytest

from geoseg.errors import CardError
from geoseg.model.card import IMAGENET_MEAN, ModelCard
from geoseg.model.presets import PRESET_NAMES, preset_card


def test_presets_have_the_published_classes_bands_and_ignore_index():
    vaihingen = preset_card("vaihingen")
    assert vaihingen.class_names == [
        "impervious surfaces",
        "building",
        "low vegetation",
        "tree",
        "car",
        "clutter",
    ]
    assert vaihingen.bands == ["nir", "red", "green"]
    assert vaihingen.ignore_index == 6
    assert preset_card("potsdam").bands == ["red", "green", "blue"]
    assert preset_card("potsdam-irrg").bands == ["nir", "red", "green"]
    loveda = preset_card("loveda")
    assert loveda.num_classes == 7 and loveda.ignore_index == 7
    assert loveda.classes[4].color == (159, 129, 183)
    uavid = preset_card("uavid")
    assert uavid.num_classes == 8 and uavid.ignore_index == 255
    assert set(PRESET_NAMES) == {"vaihingen", "potsdam", "potsdam-irrg", "loveda", "uavid"}
    assert all(tuple(preset_card(n).mean) == IMAGENET_MEAN for n in PRESET_NAMES)


def test_card_json_round_trip_is_lossless():
    card = preset_card("loveda", "resnet18")
    card.accuracy = {"overall_accuracy": 0.5}
    card.training = {"steps": 10}
    assert ModelCard.from_json(card.to_json()) == card


@pytest.mark.parametrize(
    "change, message",
    [
        ({"classes": []}, "'classes' is empty"),
        ({"classes": ["road"]}, "needs a colour"),
        ({"classes": [{"name": "a", "color": [0, 0, 300]}]}, "three values 0..255"),
        ({"bands": ["red"]}, "one value per band"),
        ({"tile_size": 500}, "multiple of 32"),
        ({"overlap": 768}, "overlap must be in"),
        ({"backbone": "vit"}, "backbone 'vit'"),
        ({"colour": 1}, "unknown field"),
        ({"value_range": [10, 10]}, "high > low"),
    ],
)
def test_malformed_cards_name_the_field(change, message):
    data = {**preset_card("potsdam").to_dict(), **change}
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(data)


def test_card_file_errors_name_the_file(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match=f"{path}: card: not valid JSON"):
        ModelCard.from_file(path)
    with pytest.raises(CardError, match="card file not found"):
        ModelCard.from_file(tmp_path / "none.json")
    path.write_text(json.dumps({"classes": [{"name": "x", "color": [1, 2, 3]}]}))
    assert ModelCard.from_file(path).bands == ["red", "green", "blue"]
