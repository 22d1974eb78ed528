"""What the QGIS Deepness plugin needs of an ONNX segmentation model, written from geoseg's card.

Deepness (github.com/PUTvision/qgis-plugin-deepness, ``deepness/processing/models/model_base.py``) reads the
tile size from the input's last dimension, so the graph's height and width must be fixed numbers; the batch
may stay free (a named dimension lets the user choose it). It feeds ``(layer values / 255 - mean) / std``,
NCHW, with ``standardization_mean``/``standardization_std`` from the metadata, and takes the argmax of the
per-class outputs (after zeroing values below ``seg_thresh``). Every metadata value is read with
``json.loads``: ``model_type`` ``"Segmentor"``, ``class_names`` ``{"0": name, ...}``, ``resolution`` in cm
per pixel, ``tile_size`` (the documentation spells it ``tiles_size``: both are written) and
``tiles_overlap`` in percent of the tile.

geoseg's export scales and normalises raw values inside its graph, so the standardisation written here only
undoes Deepness's division (mean 0, std 1/255): the graph sees the layer's raw values, as it does from
``geoseg predict``, and the one graph serves both.
"""

from __future__ import annotations

import json

from geoseg.errors import ConfigurationError
from geoseg.model.architectures import ARCHITECTURES
from geoseg.model.card import ModelCard

DEEPNESS = "deepness"
MODEL_TYPE = "Segmentor"
# Deepness stores argmax + 1 in a uint8 mask (0 is "no data"), and reads a one-channel output as a sigmoid.
MIN_CLASSES, MAX_CLASSES = 2, 254


def deepness_card(card: ModelCard, tile: int | None = None) -> ModelCard:
    """The card of a Deepness export: the card's own with ``tile`` as its (fixed) tile size; a
    :class:`ConfigurationError` naming what Deepness cannot represent, before any export work."""
    tile = card.tile_size if tile is None else int(tile)
    if not MIN_CLASSES <= card.num_classes <= MAX_CLASSES:
        raise ConfigurationError(
            f"target='deepness': the model has {card.num_classes} class(es); Deepness represents "
            f"{MIN_CLASSES} to {MAX_CLASSES} classes in one softmax output (one channel is read as a "
            "sigmoid, and class ids + 1 must fit its uint8 mask)"
        )
    ARCHITECTURES[card.architecture].check_tile(tile)
    multiple = ARCHITECTURES[card.architecture].input_multiple
    if card.overlap >= tile:
        raise ConfigurationError(
            f"target='deepness': the card's overlap of {card.overlap} px does not fit a tile of {tile} px; "
            f"use tile={(card.overlap // multiple + 1) * multiple} or larger"
        )
    if card.gsd is None:
        raise ConfigurationError(
            "target='deepness': the card has no gsd, and Deepness resamples the layer to the model's "
            'resolution; pass card=FILE with "gsd" (metres per pixel) set'
        )
    return ModelCard.from_dict({**card.to_dict(), "tile_size": tile})


def deepness_metadata(card: ModelCard) -> dict[str, str]:
    """The ONNX ``metadata_props`` Deepness reads, as JSON texts, for a card from :func:`deepness_card`."""
    values = {
        "model_type": MODEL_TYPE,
        "class_names": {str(i): name for i, name in enumerate(card.class_names)},
        "resolution": round(card.gsd * 100, 6),
        "tile_size": card.tile_size,
        "tiles_size": card.tile_size,
        "tiles_overlap": round(100 * card.overlap / card.tile_size),
        "standardization_mean": [0.0] * card.num_bands,
        "standardization_std": [1 / 255] * card.num_bands,
        "seg_thresh": 0.0,  # geoseg takes the argmax of the probabilities, without a threshold
        "seg_small_segment": 0,  # and keeps small segments (vectorize --min-pixels drops them)
    }
    return {key: json.dumps(value) for key, value in values.items()}
