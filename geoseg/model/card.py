"""The model card: everything a checkpoint's tensors need to be used correctly, stored next to them.

Weights are data with meaning: which classes (names and colours, in index order), which bands in which
order, how raw values are scaled and normalised, what tile size suits the network, the ground sampling
distance and terms of the training data, and the accuracy that was measured. The card is checked against
the weights when loading and against the input before any work starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from geoseg.errors import CardError
from geoseg.model.architectures import ARCHITECTURES

CARD_FORMAT_VERSION = 1
CARD_METADATA_KEY = "geoseg.card"  # where checkpoints and exports store the card's JSON
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def authors_normalization(architecture: str, num_bands: int) -> tuple[list[float], list[float]]:
    """(mean, std) the authors' training code used after scaling to [0, 1]: ImageNet's for MANet (three
    values: other band counts must state their own), none at all for MACU-Net and MAResU-Net, whose code
    only divides by 255."""
    if ARCHITECTURES[architecture].imagenet_normalization:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.0] * num_bands, [1.0] * num_bands


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and the RGB colour used in colour tables and colour label rasters."""

    name: str
    color: tuple[int, int, int]


@dataclass
class ModelCard:
    """Self-description of a geoseg checkpoint (stored as JSON in the safetensors metadata).

    ``value_range`` maps raw input values linearly onto [0, 1] (``(x - lo) / (hi - lo)``) before the
    per-band ``mean``/``std`` normalisation; it is what the training imagery used (0..255 for 8-bit).
    """

    classes: list[ClassInfo]
    bands: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    architecture: str = "manet"
    backbone: str | None = None  # None: the architecture's default (MACU-Net has none)
    ignore_index: int | None = None
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: list[float] | None = None  # None (both): the authors' normalisation for the architecture
    std: list[float] | None = None
    tile_size: int = 512
    overlap: int = 128
    gsd: float | None = None
    name: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    license: str = ""
    accuracy: dict[str, Any] = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.architecture in ARCHITECTURES:
            if self.backbone is None:
                self.backbone = ARCHITECTURES[self.architecture].default_backbone
            if self.mean is None and self.std is None:
                self.mean, self.std = authors_normalization(self.architecture, len(self.bands))
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def validate(self) -> None:
        """Reject cards that cannot describe a working model, with a message naming the field."""
        if self.architecture not in ARCHITECTURES:
            raise CardError(
                f"card: architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}"
            )
        spec = ARCHITECTURES[self.architecture]
        backbones = spec.backbones
        if self.backbone not in backbones:
            allowed = ", ".join(str(b) for b in backbones) if backbones != (None,) else "none (null)"
            raise CardError(
                f"card: backbone {self.backbone!r} does not fit architecture {self.architecture} "
                f"(allowed: {allowed})"
            )
        if not self.classes:
            raise CardError("card: 'classes' is empty; list the class names in index order")
        if len(self.classes) > 255:
            raise CardError(f"card: {len(self.classes)} classes; at most 255 fit a uint8 class raster")
        names = self.class_names
        if len(set(names)) != len(names):
            raise CardError(f"card: class names are not unique: {names}")
        for c in self.classes:
            if len(c.color) != 3 or not all(0 <= int(v) <= 255 for v in c.color):
                raise CardError(
                    f"card: colour of class {c.name!r} must be three values 0..255, got {c.color}"
                )
        if not self.bands:
            raise CardError("card: 'bands' is empty; name the bands the model expects, e.g. red,green,blue")
        if self.mean is None or self.std is None:
            raise CardError("card: give both 'mean' and 'std' (one value per band), or neither")
        if len(self.mean) != len(self.bands) or len(self.std) != len(self.bands):
            raise CardError(
                f"card: mean ({len(self.mean)}) and std ({len(self.std)}) need one value per band "
                f"({len(self.bands)}: {','.join(self.bands)})"
            )
        if any(s <= 0 for s in self.std):
            raise CardError(f"card: std values must be positive, got {self.std}")
        lo, hi = self.value_range
        if not hi > lo:
            raise CardError(f"card: value_range must be (low, high) with high > low, got {self.value_range}")
        if self.tile_size <= 0 or self.tile_size % spec.input_multiple:
            raise CardError(
                f"card: tile_size must be a positive multiple of {spec.input_multiple} ({spec.label}'s "
                f"input multiple), got {self.tile_size}"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise CardError(f"card: overlap must be in [0, tile_size), got {self.overlap}")

    # --- (de)serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = [{"name": c.name, "color": list(c.color)} for c in self.classes]
        data["value_range"] = list(self.value_range)
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise CardError(f"card: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CardError(
                f"card: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        if "classes" not in data:
            raise CardError("card: missing 'classes' (a list of {name, color} in index order)")
        values = dict(data)
        try:
            values["classes"] = [_parse_class(i, c) for i, c in enumerate(data["classes"])]
            if "value_range" in values:
                lo, hi = values["value_range"]
                values["value_range"] = (float(lo), float(hi))
            for key in ("mean", "std"):
                if key in values:
                    values[key] = [float(v) for v in values[key]]
            if "bands" in values:
                values["bands"] = [str(b) for b in values["bands"]]
        except (TypeError, ValueError) as error:
            raise CardError(f"card: malformed value ({error})") from error
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CardError(f"card: not valid JSON ({error})") from error
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as error:
            raise CardError(f"{path}: card file not found") from error
        except (OSError, UnicodeDecodeError) as error:
            raise CardError(f"{path}: cannot read card file ({error})") from error
        try:
            return cls.from_json(text)
        except CardError as error:
            raise CardError(f"{path}: {error}") from error


def _parse_class(index: int, entry: Any) -> ClassInfo:
    if isinstance(entry, str):
        raise CardError(
            f"card: class {index} ({entry!r}) needs a colour: {{'name': ..., 'color': [r, g, b]}}"
        )
    if not isinstance(entry, dict) or "name" not in entry or "color" not in entry:
        raise CardError(f"card: class {index} must be an object with 'name' and 'color', got {entry!r}")
    color = tuple(int(v) for v in entry["color"])
    if len(color) != 3:
        raise CardError(
            f"card: colour of class {entry['name']!r} must have three values, got {entry['color']}"
        )
    return ClassInfo(name=str(entry["name"]), color=color)  # type: ignore[arg-type]
