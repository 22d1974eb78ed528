"""Dataset presets: the classes, colours and bands of the published MANet training setups.

Foreign checkpoints (the authors' state dicts, GeoSeg Lightning files) carry no class names, colours,
band order or normalisation; a preset supplies them. Colours follow the official label rasters users
hold (for ISPRS: car is (255, 255, 0)), so colour ground truth converts correctly.
"""

from __future__ import annotations

import os

from geoseg.errors import CardError, ConfigurationError
from geoseg.model.card import ClassInfo, ModelCard

_ISPRS_CLASSES = [
    ("impervious surfaces", (255, 255, 255)),
    ("building", (0, 0, 255)),
    ("low vegetation", (0, 255, 255)),
    ("tree", (0, 255, 0)),
    ("car", (255, 255, 0)),
    ("clutter", (255, 0, 0)),
]
_ISPRS_TERMS = "ISPRS 2D Semantic Labeling benchmark: research use only, no redistribution"

_PRESETS: dict[str, dict] = {
    "vaihingen": dict(
        classes=_ISPRS_CLASSES,
        bands=["nir", "red", "green"],
        ignore_index=6,
        tile_size=512,
        overlap=128,
        gsd=0.09,
        data="ISPRS Vaihingen (IRRG true orthophotos)",
        license=_ISPRS_TERMS,
    ),
    "potsdam": dict(
        classes=_ISPRS_CLASSES,
        bands=["red", "green", "blue"],
        ignore_index=6,
        tile_size=768,
        overlap=192,
        gsd=0.05,
        data="ISPRS Potsdam (RGB true orthophotos)",
        license=_ISPRS_TERMS,
    ),
    "potsdam-irrg": dict(
        classes=_ISPRS_CLASSES,
        bands=["nir", "red", "green"],
        ignore_index=6,
        tile_size=768,
        overlap=192,
        gsd=0.05,
        data="ISPRS Potsdam (IRRG true orthophotos)",
        license=_ISPRS_TERMS,
    ),
    "loveda": dict(
        classes=[
            ("background", (255, 255, 255)),
            ("building", (255, 0, 0)),
            ("road", (255, 255, 0)),
            ("water", (0, 0, 255)),
            ("barren", (159, 129, 183)),
            ("forest", (0, 255, 0)),
            ("agricultural", (255, 195, 128)),
        ],
        bands=["red", "green", "blue"],
        ignore_index=7,
        tile_size=512,
        overlap=128,
        gsd=0.3,
        data="LoveDA (Wang et al. 2021), urban and rural scenes",
        license="CC BY-NC-SA 4.0: no commercial use, share alike",
    ),
    "uavid": dict(
        classes=[
            ("building", (128, 0, 0)),
            ("road", (128, 64, 128)),
            ("tree", (0, 128, 0)),
            ("low vegetation", (128, 128, 0)),
            ("moving car", (64, 0, 128)),
            ("static car", (192, 0, 192)),
            ("human", (64, 64, 0)),
            ("clutter", (0, 0, 0)),
        ],
        bands=["red", "green", "blue"],
        ignore_index=255,
        tile_size=1024,
        overlap=256,
        gsd=None,
        data="UAVid (oblique UAV video frames)",
        license="CC BY-NC-SA 4.0: no commercial use, share alike",
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def preset_card(name: str, backbone: str | None = None, *, architecture: str = "manet") -> ModelCard:
    """A model card for a published dataset setup (8-bit input), normalised as the architecture's authors
    trained it: ImageNet mean/std for MANet, only ÷255 for MACU-Net and MAResU-Net. ``backbone`` None is
    the architecture's default (MANet: resnet50)."""
    key = name.lower()
    if key not in _PRESETS:
        raise CardError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}")
    spec = dict(_PRESETS[key])
    classes = [ClassInfo(n, c) for n, c in spec.pop("classes")]
    return ModelCard(classes=classes, architecture=architecture, backbone=backbone, name=key, **spec)


def own_terms(card: ModelCard) -> tuple[str, str]:
    """The training data and licence ``card`` states of its own: blank where they are a preset's account
    of its published dataset (a preset card named after it), which a model trained anew with the preset's
    classes does not inherit. A user's card file states what its author wrote."""
    spec = _PRESETS.get(card.name.lower(), {})
    data = "" if card.data == spec.get("data") else card.data
    terms = "" if card.license == spec.get("license") else card.license
    return data, terms


def resolve_card(
    preset: str | None = None, card: ModelCard | str | os.PathLike | None = None
) -> ModelCard | None:
    """The card named by ``preset`` or given as ``card`` (object or JSON file), or None when neither is."""
    if preset and card is not None:
        raise ConfigurationError("give either a preset or a card, not both")
    if preset:
        return preset_card(preset)
    if card is None or isinstance(card, ModelCard):
        return card
    return ModelCard.from_file(card)
