"""Reading and writing checkpoints, safely.

The geoseg format is one ``.safetensors`` file whose metadata holds the JSON model card: it cannot run code
when loaded. Foreign checkpoints (the authors' raw state dicts, GeoSeg's Lightning ``.ckpt``) are read with
``torch.load(weights_only=True)`` only, their key names mapped onto ours, the backbone and class count read
from tensor shapes, and the card supplied by a preset or a card file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import torch

from geoseg.atomic import atomic_output
from geoseg.errors import CardError, CheckpointError
from geoseg.model.card import ModelCard
from geoseg.model.manet import MANet, build_manet
from geoseg.model.presets import resolve_card
from geoseg.model.sniff import sniff_checkpoint

CARD_METADATA_KEY = "geoseg.card"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
BUNDLED_MODEL_NAME = "manet_r50_loveda_demo.safetensors"

_WRAPPER_PREFIXES = ("module.", "net.", "model.")
_GEOSEG_BACKBONE_NAMES = (
    (re.compile(r"^backbone\.conv1\."), "firstconv."),
    (re.compile(r"^backbone\.bn1\."), "firstbn."),
    (re.compile(r"^backbone\.layer([1-4])\."), r"encoder\1."),
)
_DROPPED_KEYS = re.compile(r"^(backbone\.)?fc\.")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def default_checkpoint_path() -> Path:
    """The checkpoint shipped in ``models/``; an error that says to pass ``-m`` when there is none."""
    path = MODELS_DIR / BUNDLED_MODEL_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no bundled model at {path}; pass -m MODEL.safetensors "
            "(train one with 'geoseg train' or convert a published one with 'geoseg convert')"
        )
    return path


# --- writing -----------------------------------------------------------------------------------------


def save_checkpoint(
    model: torch.nn.Module,
    card: ModelCard,
    path: str | os.PathLike,
    *,
    half: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write weights and card to one ``.safetensors`` file, atomically (temporary name, then rename).

    ``half`` stores floating-point tensors as float16 (half the size); they are loaded back as float32.
    """
    from safetensors.torch import save_file

    _check_card_against_model(card, model)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        tensors[name] = tensor.contiguous().clone()
    metadata = {"format": "pt", CARD_METADATA_KEY: card.to_json()}
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


# --- reading -----------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
) -> tuple[MANet, ModelCard]:
    """Load a geoseg or foreign checkpoint as ``(model in eval mode, float32, on the CPU; its card)``.

    For a geoseg checkpoint the card comes from the file unless ``preset``/``card`` override it; a foreign
    checkpoint needs one of them. Architecture facts (backbone, class count, input bands) always come from
    the tensors, and a card that contradicts them is an error.
    """
    path = Path(path)
    state, embedded = read_state_dict(path)
    override = resolve_card(preset, card)
    chosen = override or embedded
    if chosen is None:
        raise CheckpointError(
            f"{path}: a foreign checkpoint carries no class names, colours or bands; "
            "pass --preset NAME or --card FILE (or convert it once with 'geoseg convert')"
        )
    backbone, num_classes, in_channels = infer_architecture(state, path)
    if chosen.backbone != backbone:
        chosen = ModelCard.from_dict({**chosen.to_dict(), "backbone": backbone})
    _check_card_against_shapes(chosen, num_classes, in_channels, path)
    model = build_manet(num_classes, backbone, in_channels=in_channels)
    _load_into(model, state, path)
    return model.float().eval(), chosen


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard | None]:
    """Tensors in our key naming, and the embedded card when the file is a geoseg checkpoint."""
    kind = sniff_checkpoint(path)
    if kind == "safetensors":
        tensors, metadata = _read_safetensors(path)
        card_json = metadata.get(CARD_METADATA_KEY)
        embedded = None
        if card_json:
            try:
                embedded = ModelCard.from_json(card_json)
            except CardError as error:
                raise CheckpointError(f"{path}: the embedded model card is invalid ({error})") from error
        return normalize_keys(tensors), embedded
    return normalize_keys(_torch_load_tensors(path)), None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: corrupt or truncated safetensors file ({_first_line(error)})"
        ) from error
    return tensors, metadata


def _torch_load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` restricted to tensors and plain containers: a pickle that would run code is refused."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects beyond tensors and plain data, "
            "which could run code when loaded; only weights are accepted"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as error:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(error)})") from error
    state = _unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path}: no state dict of tensors found in the checkpoint")
    return state


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """A raw state dict, or the one inside a Lightning/training-loop dict."""
    if not isinstance(obj, dict):
        return None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return tensors or None


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the naming of the authors' repository, GeoSeg and common wrappers onto geoseg's module names."""
    result = {}
    for key, tensor in state.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    stripped = True
        if _DROPPED_KEYS.match(name):
            continue
        for pattern, replacement in _GEOSEG_BACKBONE_NAMES:
            name = pattern.sub(replacement, name)
        result[name] = tensor
    return result


def infer_architecture(
    state: dict[str, torch.Tensor], path: Path | str = "checkpoint"
) -> tuple[str, int, int]:
    """(backbone, number of classes, input bands) read from tensor shapes."""
    head = state.get("finalconv3.weight")
    stem = state.get("firstconv.weight")
    if head is None or stem is None or head.ndim != 4 or stem.ndim != 4:
        missing = [k for k in ("firstconv.weight", "finalconv3.weight") if k not in state]
        sample = ", ".join(list(state)[:3]) or "none"
        raise CheckpointError(
            f"{path}: not a MANet checkpoint (missing {', '.join(missing) or 'well-formed head/stem'}; "
            f"first keys: {sample})"
        )
    bottleneck = "encoder1.0.conv3.weight" in state
    layer3_blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder3\.(\d+)\.", k))}
    blocks = max(layer3_blocks) + 1 if layer3_blocks else 0
    by_shape = {
        (False, 2): "resnet18",
        (False, 6): "resnet34",
        (True, 6): "resnet50",
        (True, 23): "resnet101",
    }
    backbone = by_shape.get((bottleneck, blocks))
    if backbone is None:
        raise CheckpointError(
            f"{path}: unsupported encoder ({'bottleneck' if bottleneck else 'basic'} blocks, "
            f"{blocks} in stage 3); "
            "supported: resnet18, resnet34, resnet50, resnet101"
        )
    return backbone, int(head.shape[0]), int(stem.shape[1])


def _check_card_against_shapes(card: ModelCard, num_classes: int, in_channels: int, path: Path) -> None:
    if card.num_classes != num_classes:
        raise CardError(
            f"{path}: the card lists {card.num_classes} classes ({', '.join(card.class_names)}) "
            f"but the weights have {num_classes} output channels"
        )
    if card.num_bands != in_channels:
        raise CardError(
            f"{path}: the card lists {card.num_bands} bands ({','.join(card.bands)}) "
            f"but the weights take {in_channels} input bands"
        )


def _check_card_against_model(card: ModelCard, model: torch.nn.Module) -> None:
    state = model.state_dict()
    backbone, num_classes, in_channels = infer_architecture(state)
    if card.backbone != backbone:
        raise CardError(f"card says backbone {card.backbone} but the model is a {backbone}")
    _check_card_against_shapes(card, num_classes, in_channels, Path("model"))


def _load_into(model: MANet, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not match MANet ({model.backbone_name}): "
            f"{len(missing)} missing {_few(missing)}, {len(unexpected)} unexpected {_few(unexpected)}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {k} is {tuple(state[k].shape)}, "
            f"MANet expects {tuple(expected[k].shape)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _few(keys: list[str], n: int = 3) -> str:
    if not keys:
        return ""
    more = f", … (+{len(keys) - n})" if len(keys) > n else ""
    return "(" + ", ".join(keys[:n]) + more + ")"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def checkpoint_summary(path: str | os.PathLike) -> dict:
    """What ``geoseg info`` shows for a checkpoint, without building the network."""
    path = Path(path)
    state, card = read_state_dict(path)
    backbone, num_classes, in_channels = infer_architecture(state, path)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values() if t.is_floating_point()})
    return {
        "path": str(path),
        "format": "geoseg" if card is not None else "foreign (needs --preset or --card)",
        "architecture": "manet",
        "backbone": backbone,
        "classes": num_classes,
        "input_bands": in_channels,
        "parameters": int(sum(t.numel() for k, t in state.items() if not k.endswith(_BUFFER_SUFFIXES))),
        "weights_dtype": ",".join(dtypes),
        "size_bytes": path.stat().st_size,
        "card": json.loads(card.to_json()) if card is not None else None,
    }


def convert_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
    half: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read a foreign (or geoseg) checkpoint, complete its card, and write a geoseg checkpoint."""
    from geoseg.atomic import check_output_path

    check_output_path(output, overwrite)
    model, full_card = load_checkpoint(source, preset=preset, card=card)
    save_checkpoint(model, full_card, output, half=half, overwrite=overwrite)
    return {
        "input": str(source),
        "output": str(output),
        "backbone": full_card.backbone,
        "classes": full_card.num_classes,
        "class_names": full_card.class_names,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
