"""A model file as a STAC Item with the Machine Learning Model (MLM) extension, built from its card.

Catalogues of models (and tools such as stac-model or the QGIS MLM plugins) read MLM, so ``geoseg info
MODEL --stac`` writes one for a checkpoint (``.safetensors``) or one of geoseg's exports (``.onnx``,
``.pt2``): the network, its task, parameter count, the input it expects (bands, shape, scaling and
normalisation: none for an export, which does both inside) and the classes it outputs (with their colours,
as classification classes). The input bands are defined as STAC 1.1 ``bands`` on the Item and on the model
asset, as MLM requires of named bands.

Validation is offline: the core Item against the STAC 1.1 JSON schemas that pystac ships, and the MLM
fields by reading them back through pystac's MLM extension classes with the structural rules of the MLM
schema (shape and dimension order of equal length, known task and data type names). The MLM JSON schema
itself is published only online and is never fetched at run time (the tests validate against a copy).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import CardError
from geoseg.model.card import ModelCard

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
# MLM v1.4.0 validates classification:classes against classification v1.1.0 (value and description)
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
TASK = "semantic-segmentation"
RANDOM_INITIALISATION = "random"  # how geoseg train's record starts "initial_weights" without --init


@dataclass(frozen=True)
class ModelFile:
    """What an Item says about the file itself: how it is read and what its graph takes and returns."""

    path: Path
    card: ModelCard
    total_parameters: int
    framework: str  # an MLM framework name
    framework_version: str | None
    artifact_type: str  # MLM: how the file is read
    media_type: str
    raw_input: bool  # an export scales and normalises inside: its input is the raw pixel values
    fixed_tile: bool  # height and width fixed in the graph (else any multiple of the input multiple)
    outputs: str  # "logits" or "probabilities"


def value_scaling(card: ModelCard) -> list[dict[str, Any]]:
    """The card's scaling as one MLM z-score per band: ``((x - lo) / (hi - lo) - mean) / std`` is
    ``(x - mean') / std'`` with ``mean' = lo + mean·(hi - lo)`` and ``std' = std·(hi - lo)`` (MLM allows one
    scaling per band, so the min-max step is folded in)."""
    lo, hi = card.value_range
    return [
        {"type": "z-score", "mean": round(lo + m * (hi - lo), 6), "stddev": round(s * (hi - lo), 6)}
        for m, s in zip(card.mean, card.std, strict=True)
    ]


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """A geoseg checkpoint, ONNX export or ``.pt2`` export, described for its Item (its card is required)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_file(path)
    if suffix == ".pt2":
        return _pt2_file(path)
    return _checkpoint_file(path)


def _no_card(path: Path) -> CardError:
    return CardError(
        f"{path}: a foreign model has no card to describe; convert it first (geoseg convert, "
        "geoseg.api.convert_checkpoint) with preset=NAME or card=FILE"
    )


def _checkpoint_file(path: Path) -> ModelFile:
    import torch

    from geoseg.model.checkpoint import checkpoint_summary

    summary = checkpoint_summary(path)
    if summary["card"] is None:
        raise _no_card(path)
    return ModelFile(
        path,
        ModelCard.from_dict(summary["card"]),
        summary["parameters"],
        "PyTorch",
        torch.__version__.split("+")[0],
        "safetensors",
        "application/octet-stream; framework=pytorch; profile=safetensors",
        raw_input=False,
        fixed_tile=False,
        outputs="logits",
    )


def _onnx_file(path: Path) -> ModelFile:
    import numpy as np

    from geoseg.export.metadata import describe_onnx, require

    description = describe_onnx(path)
    if description["card"] is None:
        raise _no_card(path)
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    (shape,) = description["inputs"].values()
    return ModelFile(
        path,
        ModelCard.from_dict(description["card"]),
        int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer)),
        "ONNX",
        None,
        "onnx",
        "application/octet-stream; framework=onnx; profile=onnx",
        raw_input=True,
        fixed_tile=all(isinstance(d, int) for d in shape[2:]),
        outputs=description["returns"] or "probabilities",
    )


def _pt2_file(path: Path) -> ModelFile:
    import torch

    from geoseg.errors import CheckpointError
    from geoseg.export.metadata import OUTPUT_KIND_KEY
    from geoseg.model.card import CARD_METADATA_KEY

    extra = {CARD_METADATA_KEY: "", OUTPUT_KIND_KEY: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as error:  # torch raises several kinds for a file that is not an exported program
        raise CheckpointError(f"{path}: not a readable torch.export program ({error})") from error
    if not extra[CARD_METADATA_KEY]:
        raise _no_card(path)
    (example,) = [s for s in program.graph_signature.user_inputs]
    (node,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == example]
    dims = node.meta["val"].shape[2:]
    return ModelFile(
        path,
        ModelCard.from_json(extra[CARD_METADATA_KEY]),
        int(sum(p.numel() for p in program.parameters())),
        "PyTorch",
        torch.__version__.split("+")[0],
        "torch.export.save",
        "application/octet-stream; framework=pytorch; profile=torch.export",
        raw_input=True,
        fixed_tile=all(isinstance(d, int) for d in dims),
        outputs=extra[OUTPUT_KIND_KEY] or "probabilities",
    )


def model_href(path: str | os.PathLike, item_path: str | os.PathLike | None = None) -> str:
    """The model asset's href: relative to the Item's file when it is saved (so the pair can move
    together), else the model's absolute ``file://`` URI (stdout has no place to be relative to)."""
    model = Path(path).resolve()
    if item_path is None:
        return model.as_uri()
    return Path(os.path.relpath(model, Path(item_path).resolve().parent)).as_posix()


def checkpoint_stac_item(
    path: str | os.PathLike, item_path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """``geoseg info MODEL --stac [-o ITEM]``: the MLM Item of a geoseg checkpoint or export, with the
    model's href relative to ``item_path`` (where the Item will be written) or absolute without it."""
    return model_item(read_model_file(path), href=model_href(path, item_path))


def write_stac_item(
    path: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write the MLM Item of ``path`` to ``output`` (atomically), its model href relative to ``output``."""
    import json

    from geoseg.atomic import atomic_output, check_output_path

    check_output_path(output, overwrite, inputs=[path])
    item = checkpoint_stac_item(path, item_path=output)
    with atomic_output(output, overwrite) as tmp:
        tmp.write_text(json.dumps(item, indent=2) + "\n", encoding="utf-8")
    return item


def pretraining(card: ModelCard) -> dict[str, Any]:
    """``mlm:pretrained`` (and its source) as the card's training record states it: true only when training
    started from weights (``geoseg train --init``), false with a null source when it started from random
    ones, and absent when the card has no record (a converted checkpoint: unknown)."""
    initial = card.training.get("initial_weights")
    if not isinstance(initial, str) or not initial:
        return {}
    if initial.lower().startswith(RANDOM_INITIALISATION):
        return {"mlm:pretrained": False, "mlm:pretrained_source": None}
    return {"mlm:pretrained": True}


def _sentence(text: str) -> str:
    """``text`` ending in exactly one full stop (or its own ! or ?), so joined parts read as sentences."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def model_item(model: ModelFile, *, href: str) -> dict[str, Any]:
    """The STAC Item (a GeoJSON Feature without geometry: a model has no footprint) describing ``model``."""
    from geoseg.model.architectures import ARCHITECTURES, network_label

    card = model.card
    tile = card.tile_size
    name = card.name or model.path.stem
    modified = dt.datetime.fromtimestamp(model.path.stat().st_mtime, tz=dt.timezone.utc)
    bands = [{"name": band} for band in card.bands]
    lo, hi = card.value_range
    if model.raw_input:
        scaling, prepared = None, f"raw values (clipped to [{lo:g}, {hi:g}] and normalised inside)"
    else:
        scaling, prepared = value_scaling(card), f"raw values clipped to [{lo:g}, {hi:g}]"
    multiple = ARCHITECTURES[card.architecture].input_multiple
    sizes = "fixed" if model.fixed_tile else f"any multiple of {multiple} works"
    properties: dict[str, Any] = {
        "datetime": modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": " ".join(
            _sentence(part)
            for part in (
                card.description or f"{card.architecture} land-cover segmentation ({name})",
                f"Training data: {card.data}" if card.data else "",
                f"Terms: {card.license}" if card.license else "",
            )
            if part
        ),
        "bands": bands,
        "mlm:name": name,
        "mlm:architecture": network_label(card.architecture, card.backbone),
        "mlm:tasks": [TASK],
        "mlm:framework": model.framework,
        **({"mlm:framework_version": model.framework_version} if model.framework_version else {}),
        "mlm:total_parameters": model.total_parameters,
        **pretraining(card),
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
                "value_scaling": scaling,
                "resize_type": None,
                "description": f"tiles of {tile} px ({sizes}), overlap {card.overlap} px; {prepared}",
            }
        ],
        "mlm:output": [
            {
                "name": model.outputs,
                "tasks": [TASK],
                "result": {
                    "shape": [-1, card.num_classes, tile, tile],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "classification:classes": [
                    {
                        "value": i,
                        "name": c.name,
                        "description": c.name,
                        "color_hint": "{:02X}{:02X}{:02X}".format(*c.color),
                    }
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
                "href": href,
                "type": model.media_type,
                "title": f"{network_label(card.architecture, card.backbone)} {model.artifact_type} "
                "with its geoseg model card",
                "roles": ["mlm:model", "mlm:weights"],
                "mlm:artifact_type": model.artifact_type,
                "bands": bands,
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
        classes = output.properties.get("classification:classes") or []
        if not classes or any(c.get("value") is None or not c.get("description") for c in classes):
            problems.append(f"output {output.name!r} needs classification classes with value and description")
    named = {b for i in mlm.input for b in i.bands if isinstance(b, str)}
    undefined = sorted(named - {b.get("name") for b in mlm.properties.get("bands") or []})
    if undefined:
        problems.append(f"input bands {undefined} are not defined in the Item's bands")
    return problems
