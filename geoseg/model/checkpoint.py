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
from typing import Any, NamedTuple

import torch

from geoseg.atomic import atomic_output
from geoseg.errors import CardError, CheckpointError
from geoseg.model.architectures import ARCHITECTURES, network_label
from geoseg.model.build import build_model
from geoseg.model.card import CARD_METADATA_KEY, ModelCard
from geoseg.model.presets import preset_card, resolve_card
from geoseg.model.sniff import sniff_checkpoint

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
    """The checkpoint shipped in ``models/``; an error that says to pass ``model`` when there is none."""
    path = MODELS_DIR / BUNDLED_MODEL_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no bundled model at {path}; pass model=MODEL.safetensors "
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
) -> tuple[torch.nn.Module, ModelCard]:
    """Load a geoseg or foreign checkpoint as ``(model in eval mode, float32, on the CPU; its card)``.

    For a geoseg checkpoint the card comes from the file unless ``preset``/``card`` override it; a foreign
    checkpoint needs one of them. The network (MANet, MACU-Net or MAResU-Net), backbone, class count and
    input bands are read from the tensors. A card's ``architecture`` must name that network (an error
    otherwise); a preset only gives classes, colours and bands, and takes the network's normalisation (the
    siblings' authors only divided by 255).
    """
    path = Path(path)
    state, embedded = read_state_dict(path)
    override = resolve_card(preset, card)
    chosen = override or embedded
    if chosen is None:
        raise CheckpointError(
            f"{path}: a foreign checkpoint carries no class names, colours or bands; "
            "pass preset=NAME or card=FILE"
        )
    found = infer_architecture(state, path)
    if preset:
        chosen = preset_card(preset, found.backbone, architecture=found.architecture)
    elif chosen.architecture != found.architecture:
        raise CardError(
            f"{path}: the card says architecture {chosen.architecture} but the weights are a "
            f"{network_label(found.architecture, found.backbone)}; "
            f'set "architecture": "{found.architecture}" in the card or use the matching checkpoint'
        )
    elif chosen.backbone != found.backbone:
        chosen = ModelCard.from_dict({**chosen.to_dict(), "backbone": found.backbone})
    _check_card_against_shapes(chosen, found.num_classes, found.in_channels, path)
    model = build_model(
        found.architecture, found.num_classes, backbone=found.backbone, in_channels=found.in_channels
    )
    _load_into(model, state, path, network_label(found.architecture, found.backbone))
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


# torch.load(weights_only=True) can still run code from a crafted pickle before this (CVE-2025-32434).
SAFE_TORCH_LOAD = (2, 6)


def torch_load_weights(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)``, the one way geoseg reads a pickle (foreign checkpoints, training
    states); refused with one line on a torch older than 2.6, where ``weights_only`` is not a safe guard."""
    found = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    if found is None or (int(found[1]), int(found[2])) < SAFE_TORCH_LOAD:
        raise CheckpointError(
            f"{path}: refused: torch {torch.__version__} can run code hidden in a pickled checkpoint "
            "even with weights_only=True (CVE-2025-32434); upgrade to torch>=2.6 "
            "(pip install -U 'torch>=2.6'), or use a .safetensors checkpoint"
        )
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _torch_load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` restricted to tensors and plain containers: a pickle that would run code is refused."""
    try:
        obj = torch_load_weights(path)
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


class Architecture(NamedTuple):
    """Which network a state dict holds, read from its key names, and its classes and bands, from shapes."""

    architecture: str
    backbone: str | None
    num_classes: int
    in_channels: int


def infer_architecture(state: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> Architecture:
    """MANet, MACU-Net or MAResU-Net, told apart by modules only one of them has: never by the
    ``attentionN.PAM.*`` names alone, which MANet (softplus kernel) and MAResU-Net (Taylor expansion) share
    for different formulas."""
    if "conv1.0.squre.weight" in state or "skblock1.fc11.weight" in state:
        classes, bands = _head_and_stem(state, "conv10.weight", "conv1.0.squre.weight", "MACU-Net", path)
        return Architecture("macunet", None, classes, bands)
    sibling = "attention1.conv1.0.weight" in state or "attention1.conv2P.1.0.weight" in state
    name = "MAResU-Net" if sibling else "MANet"
    classes, bands = _head_and_stem(state, "finalconv3.weight", "firstconv.weight", name, path)
    backbone = _resnet_encoder(state, path)
    if not sibling:
        return Architecture("manet", backbone, classes, bands)
    maresunet = ARCHITECTURES["maresunet"]
    if backbone not in maresunet.backbones:
        raise CheckpointError(
            f"{path}: MAResU-Net weights with a {backbone} encoder; the published network has "
            f"{maresunet.default_backbone}"
        )
    return Architecture("maresunet", backbone, classes, bands)


def _head_and_stem(
    state: dict[str, torch.Tensor], head_key: str, stem_key: str, network: str, path: Path | str
) -> tuple[int, int]:
    """(classes, input bands): the head's output channels and the first convolution's input channels."""
    head, stem = state.get(head_key), state.get(stem_key)
    if head is None or stem is None or head.ndim != 4 or stem.ndim != 4:
        missing = [k for k in (stem_key, head_key) if k not in state]
        sample = ", ".join(list(state)[:3]) or "none"
        what = "not a MANet checkpoint (nor MACU-Net or MAResU-Net)" if network == "MANet" else network
        raise CheckpointError(
            f"{path}: {what}: missing {', '.join(missing) or 'a well-formed head/stem'} "
            f"(first keys: {sample})"
        )
    return int(head.shape[0]), int(stem.shape[1])


def _resnet_encoder(state: dict[str, torch.Tensor], path: Path | str) -> str:
    """The torchvision ResNet behind ``encoder1..4``, from its block type and the depth of stage 3."""
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
    return backbone


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
    found = infer_architecture(model.state_dict())
    if card.architecture != found.architecture:
        raise CardError(
            f"card says architecture {card.architecture} but the model is a "
            f"{network_label(found.architecture, found.backbone)}"
        )
    if card.backbone != found.backbone:
        raise CardError(f"card says backbone {card.backbone} but the model is a {found.backbone}")
    _check_card_against_shapes(card, found.num_classes, found.in_channels, Path("model"))


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, network: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not match {network}: "
            f"{len(missing)} missing {_few(missing)}, {len(unexpected)} unexpected {_few(unexpected)}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {k} is {tuple(state[k].shape)}, "
            f"{network} expects {tuple(expected[k].shape)}"
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
    found = infer_architecture(state, path)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values() if t.is_floating_point()})
    return {
        "path": str(path),
        "format": "geoseg" if card is not None else "foreign (needs --preset or --card)",
        "architecture": found.architecture,
        "backbone": found.backbone,
        "classes": found.num_classes,
        "input_bands": found.in_channels,
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
    """Read a foreign (or geoseg) checkpoint, complete its card, and write a geoseg checkpoint.

    A geoseg checkpoint keeps its own card unless ``preset``/``card`` replace it (e.g. ``half=True`` to halve
    its size); a foreign one needs one of them (:class:`CheckpointError` otherwise)."""
    from geoseg.atomic import check_output_path

    check_output_path(output, overwrite, inputs=[source])  # --overwrite would replace the checkpoint read
    model, full_card = load_checkpoint(source, preset=preset, card=card)
    save_checkpoint(model, full_card, output, half=half, overwrite=overwrite)
    return {
        "input": str(source),
        "output": str(output),
        "architecture": full_card.architecture,
        "network": network_label(full_card.architecture, full_card.backbone),
        "backbone": full_card.backbone,
        "classes": full_card.num_classes,
        "class_names": full_card.class_names,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
