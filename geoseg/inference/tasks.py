"""The units of work and what they report: data only, shared by the layers that make, run and record them.

A :class:`RegionTask` is everything a worker (this process or a Dask worker) needs to compute one region; a
:class:`RegionResult` is what comes back and what the work folder records; a :class:`PredictResult` is what
``predict`` reports per scene. ``Progress`` callbacks count tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.inference.grid import Region
from geoseg.inference.plan import ScenePlan
from geoseg.model.card import ModelCard

Progress = Callable[[int, int], None]
# The network as the loop sees it: a normalized batch (B, C, T, T) on the device -> logits (B, K, T, T).
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ModelSource:
    """How a worker gets the network: a checkpoint it can read (loaded once per worker), or the network
    itself (in-memory models of the Python API, sent with each task). ``digest`` names it in worker caches;
    ``compile``: each worker runs it through ``torch.compile`` once."""

    digest: str
    path: str | None = None
    preset: str | None = None
    card: ModelCard | str | None = None
    module: torch.nn.Module | None = field(default=None, repr=False)
    compile: bool = False

    def load(self) -> torch.nn.Module:
        if self.module is not None:
            return self.module
        from geoseg.model.loading import load_model  # checkpoints and ONNX exports alike

        return load_model(self.path, self.preset, self.card)[0]


@dataclass
class RegionTask:
    """One region of one planned scene, with everything a worker needs to compute it."""

    plan: ScenePlan
    region: Region
    parts: dict[str, Path]
    card: ModelCard
    batch_size: int
    device: str
    precision: str
    tta: str

    @property
    def tiles(self) -> int:
        return self.plan.grid.for_region(self.region).num_tiles


@dataclass
class RegionResult:
    """What one region reports back: per-class counts of its valid pixels and the tiles it computed."""

    region: Region
    counts: np.ndarray
    tiles: int


@dataclass
class PredictResult:
    """What ``predict`` reports per scene (``--json`` prints :meth:`to_dict`).

    ``tiles`` counts the tiles the network computed in this run: tiles whose input pixels are all invalid
    are skipped, and regions finished by an earlier, interrupted run (``--resume``) are not computed again.
    """

    input: str
    outputs: dict[str, str]
    width: int
    height: int
    tiles: int
    seconds: float
    device: str
    class_fractions: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    precision: str | None = None  # what the network ran in (fp32, bf16, fp16, int8); None when it never ran
    engine: str | None = None  # the runtime that ran it (torch, onnxruntime)
    float32_layers: list[str] | None = None  # int8: the layer groups kept in float32
    status: str | None = None  # "skipped": every output existed already (skip_existing)
    item: str | None = None  # the id of the STAC Item the scene was stacked from

    def to_dict(self) -> dict[str, Any]:
        record = {
            "input": self.input,
            "outputs": self.outputs,
            "width": self.width,
            "height": self.height,
            "tiles": self.tiles,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "precision": self.precision,
            "engine": self.engine,
            "class_fractions": self.class_fractions,
        }
        if self.float32_layers is not None:
            record["float32_layers"] = self.float32_layers
        if self.error is not None:
            record["error"] = self.error
        if self.status is not None:
            record["status"] = self.status
        if self.item is not None:
            record["item"] = self.item
        return record
