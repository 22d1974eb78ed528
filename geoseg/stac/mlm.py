"""A checkpoint as a STAC Item with the Machine Learning Model (MLM) extension, built from its card.

Catalogues of models (and tools such as stac-model or the QGIS MLM plugins) read MLM, so ``geoseg info
MODEL --stac`` writes one: the network, its task, parameter count, the input it expects (bands, shape,
scaling and normalisation) and the classes it outputs (with their colours, as classification classes).

Validation is offline: the core Item against the STAC 1.1 JSON schemas that pystac ships, and the MLM
fields by reading them back through pystac's MLM extension classes with the structural rules of the MLM
schema (shape and dimension order of equal length, known task and data type names). The MLM JSON schema
itself is published only online and is never fetched at run time.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from geoseg.errors import CardError
from geoseg.model.card import ModelCard

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
TASK = "semantic-segmentation"
# the model asset: MLM's artifact type names how the file is read (safetensors: weights with the card inside)
ARTIFACT_TYPE = "safetensors"
MEDIA_TYPE = "application/octet-stream; framework=pytorch; profile=safetensors"


def value_scaling(card: ModelCard) -> list[dict[str, Any]]:
    """The card's scaling as one MLM z-score per band: ``((x - lo) / (hi - lo) - mean) / std`` is
    ``(x - mean') / std'`` with ``mean' = lo + mean·(hi - lo)`` and ``std' = std·(hi - lo)`` (MLM allows one
    scaling per band, so the min-max step is folded in)."""
    lo, hi = card.value_range
    return [
        {"type": "z-score", "mean": round(lo + m * (hi - lo), 6), "stddev": round(s * (hi - lo), 6)}
        for m, s in zip(card.mean, card.std, strict=True)
    ]


def checkpoint_stac_item(path: str | os.PathLike) -> dict[str, Any]:
    """``geoseg info MODEL --stac``: the MLM Item of a geoseg checkpoint (its card is required)."""
    import torch

    from geoseg.model.checkpoint import checkpoint_summary

    summary = checkpoint_summary(path)
    if summary["card"] is None:
        raise CardError(
            f"{path}: a foreign checkpoint has no card to describe; convert it first with "
            "'geoseg convert MODEL -o OUT.safetensors --preset NAME' (or --card FILE)"
        )
    card = ModelCard.from_dict(summary["card"])
    version = torch.__version__.split("+")[0]
    return model_item(path, card, total_parameters=summary["parameters"], framework_version=version)


def model_item(
    path: str | os.PathLike, card: ModelCard, *, total_parameters: int, framework_version: str
) -> dict[str, Any]:
    """The STAC Item (a GeoJSON Feature without geometry: a model has no footprint) describing ``path``."""
    from geoseg.model.architectures import network_label

    path = Path(path)
    tile = card.tile_size
    name = card.name or path.stem
    modified = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)
    properties: dict[str, Any] = {
        "datetime": modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": " ".join(
            part
            for part in (
                card.description or f"{card.architecture} land-cover segmentation ({name}).",
                f"Training data: {card.data}." if card.data else "",
                f"Terms: {card.license}." if card.license else "",
            )
            if part
        ),
        "mlm:name": name,
        "mlm:architecture": network_label(card.architecture, card.backbone),
        "mlm:tasks": [TASK],
        "mlm:framework": "pytorch",
        "mlm:framework_version": framework_version,
        "mlm:total_parameters": total_parameters,
        "mlm:pretrained": True,
        "mlm:accelerator": None,
        "mlm:input": [
            {
                "name": "pixels",
                "bands": list(card.bands),
                "input": {
                    "shape": [-1, card.num_bands, tile, tile],
                    "dim_order": ["batch", "bands", "height", "width"],
                    "data_type": "float32",
                },
                "value_scaling": value_scaling(card),
                "resize_type": None,
                "description": f"tiles of {tile} px (any multiple of 32 works), overlap {card.overlap} px; "
                f"raw values clipped to {list(card.value_range)}",
            }
        ],
        "mlm:output": [
            {
                "name": "logits",
                "tasks": [TASK],
                "result": {
                    "shape": [-1, card.num_classes, tile, tile],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "classification:classes": [
                    {"value": i, "name": c.name, "color_hint": "{:02X}{:02X}{:02X}".format(*c.color)}
                    for i, c in enumerate(card.classes)
                ],
                "post_processing_function": None,
            }
        ],
    }
    if card.gsd is not None:
        properties["gsd"] = card.gsd
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA],
        "id": name,
        "geometry": None,
        "properties": properties,
        "links": [],
        "assets": {
            "model": {
                "href": path.name,
                "type": MEDIA_TYPE,
                "title": f"{card.architecture} {card.backbone} weights with their geoseg model card",
                "roles": ["mlm:model", "mlm:weights"],
                "mlm:artifact_type": ARTIFACT_TYPE,
            }
        },
    }
    validate_model_item(item)
    return item


def validate_model_item(item: dict[str, Any]) -> None:
    """Raise :class:`CardError` when ``item`` is not a valid STAC 1.1 Item or its MLM fields are malformed."""
    import pystac
    from pystac.extensions.mlm import MLMExtension
    from pystac.validation import JsonSchemaSTACValidator

    try:
        JsonSchemaSTACValidator().validate_core(item, pystac.STACObjectType.ITEM, item["stac_version"])
        mlm = MLMExtension.ext(pystac.Item.from_dict(item))
        problems = _mlm_problems(mlm)
    except Exception as error:  # pystac and jsonschema raise several kinds; all mean "not valid"
        raise CardError(f"STAC Item {item.get('id')!r} is not valid: {str(error).splitlines()[0]}") from error
    if problems:
        raise CardError(f"STAC Item {item.get('id')!r} is not valid MLM: {'; '.join(problems)}")


def _mlm_problems(mlm) -> list[str]:
    """The MLM schema's rules, read through pystac's typed accessors (which raise on missing fields)."""
    from pystac.extensions.mlm import AcceleratorType, TaskType, ValueScaling, ValueScalingType
    from pystac.extensions.raster import DataType

    tasks = {t.value for t in TaskType}
    problems = []
    if not (mlm.mlm_name and mlm.architecture and mlm.tasks):
        problems.append("mlm:name, mlm:architecture and mlm:tasks are required")
    problems += [f"unknown task {t!r}" for t in mlm.tasks if t not in tasks]
    if mlm.accelerator is not None and mlm.accelerator not in {a.value for a in AcceleratorType}:
        problems.append(f"unknown accelerator {mlm.accelerator!r}")
    if not isinstance(mlm.total_parameters, int) or mlm.total_parameters < 0:
        problems.append("mlm:total_parameters must be a non-negative integer")
    structures = [("input", i.input, len(i.bands)) for i in mlm.input]
    structures += [("output", o.result, None) for o in mlm.output]
    for kind, structure, bands in structures:
        if len(structure.shape) != len(structure.dim_order):
            problems.append(
                f"{kind} shape {structure.shape} and dim_order {structure.dim_order} differ in length"
            )
        if structure.data_type not in {d.value for d in DataType}:
            problems.append(f"{kind} data_type {structure.data_type!r} is not a raster data type")
        if bands is not None and structure.shape[1] != bands:
            problems.append(f"input shape has {structure.shape[1]} bands, the band list {bands}")
    for model_input in mlm.input:
        # the schema's value_scaling is a list (one per band, or one for all); pystac models one object
        scaling = model_input.properties.get("value_scaling") or []
        if scaling and len(scaling) not in (1, len(model_input.bands)):
            problems.append(f"{len(scaling)} value scalings for {len(model_input.bands)} bands")
        for entry in scaling:
            if ValueScaling(entry).type not in {s.value for s in ValueScalingType}:
                problems.append(f"unknown value scaling {entry.get('type')!r}")
            if entry.get("type") == "z-score" and not entry.get("stddev"):
                problems.append("a z-score value scaling needs mean and a non-zero stddev")
    for output in mlm.output:
        problems += [f"unknown task {t!r}" for t in output.tasks if t not in tasks]
        if not output.classes or any(c.name is None or c.value is None for c in output.classes):
            problems.append(f"output {output.name!r} needs classification classes with value and name")
    return problems
