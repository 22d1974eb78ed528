"""An ONNX model behind geoseg's engine: onnxruntime runs the network, geoseg tiles, blends, masks, writes.

A deployment that holds only an exported model still gets geoseg's outputs. The engine calls a network with
a prepared batch and softmaxes what comes back; :class:`OnnxNetwork` fits that slot. A geoseg export
(:mod:`geoseg.export.exporter`) scales and normalises inside its graph, so it is prepared with raw values
(``prepare_input``), never normalised twice; an ONNX file without geoseg's metadata is taken to be a bare
network (normalised input, logits out) and gets the card's normalisation as a checkpoint would.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.export.metadata import FLOAT32_LAYERS_KEY, OUTPUT_KIND_KEY, require
from geoseg.model.card import ModelCard
from geoseg.model.checkpoint import CARD_METADATA_KEY
from geoseg.model.normalize import normalize
from geoseg.model.presets import resolve_card

_TINY = float(np.finfo(np.float32).tiny)


class OnnxNetwork(nn.Module):
    """An ONNX model as the engine's network: ``prepare_input`` then ``forward`` give what the engine
    softmaxes. A geoseg export that outputs probabilities returns their logarithm, whose softmax gives them
    back (the engine's blending stays the same for every kind of network).

    ``engine``, ``precision`` and ``float32_layers`` say what runs, for the reports: an int8 model
    (:mod:`geoseg.export.quantize`) names the layer groups it kept in float32; any other runs float32."""

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        *,
        raw_input: bool,
        outputs: str,
        float32_layers: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.card = card
        self.raw_input = raw_input
        self.outputs = outputs
        self.precision = "fp32" if float32_layers is None else "int8"
        self.float32_layers = float32_layers
        self.engine = "onnxruntime"
        # The file's hash as a buffer: model digests (resume manifests, worker caches) tell exports apart.
        digest = hashlib.sha256(path.read_bytes()).digest()
        self.register_buffer("sha256", torch.frombuffer(bytearray(digest), dtype=torch.uint8))
        self._sessions: dict[str, tuple[int, object]] = {}  # device -> (threads it was opened with, session)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sessions"] = {}  # onnxruntime sessions do not pickle; Dask workers open their own
        return state

    def prepare_input(self, batch: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
        """The batch as the graph wants it. For a geoseg export: raw values, with the scene's value range
        (``--scale``) mapped linearly onto the card's, which the graph then scales and normalises."""
        if not self.raw_input:
            return normalize(batch, value_range, self.card.mean, self.card.std)
        lo, hi = (float(v) for v in value_range)
        card_lo, card_hi = (float(v) for v in self.card.value_range)
        x = batch.to(torch.float32).clamp(lo, hi)
        if (lo, hi) != (card_lo, card_hi):
            x = (x - lo) * ((card_hi - card_lo) / (hi - lo)) + card_lo
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self._session(x.device)
        (graph_input,) = session.get_inputs()
        fixed = graph_input.shape[2:]
        if all(isinstance(d, int) for d in fixed) and list(x.shape[2:]) != fixed:
            raise CheckpointError(
                f"{self.path}: the ONNX model takes tiles of {fixed[0]}x{fixed[1]} px only, got "
                f"{x.shape[2]}x{x.shape[3]}; leave out tile=N (or pass tile={fixed[0]})"
            )
        name = graph_input.name
        (out,) = session.run(None, {name: np.ascontiguousarray(x.detach().float().cpu().numpy())})
        scores = torch.from_numpy(out).to(x.device)
        return scores.clamp_min(_TINY).log() if self.outputs == "probabilities" else scores

    def _session(self, device: torch.device):
        """One onnxruntime session per device: the CUDA provider for a CUDA device where it is present. Its
        threads are torch's when it runs (a Dask worker sets its share of the cores before each region): a
        session opened with another count (at load, in a process whose share changed since) is replaced."""
        key, threads = str(device), torch.get_num_threads()
        opened = self._sessions.get(key)
        if opened is None or opened[0] != threads:
            ort = require("onnxruntime")
            providers: list = ["CPUExecutionProvider"]
            if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            session = ort.InferenceSession(str(self.path), _options(ort, threads), providers=providers)
            self._sessions[key] = opened = (threads, session)
        return opened[1]


def _options(ort, threads: int):
    """onnxruntime's threads as torch's (``torch.set_num_threads``, a Dask worker's share of the cores):
    onnxruntime's own default, one per physical core, oversubscribes the workers of one machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return options


def load_onnx(
    path: str | os.PathLike,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
) -> tuple[OnnxNetwork, ModelCard]:
    """An ONNX model and its card: the one in its metadata unless ``preset``/``card`` overrides it; a file
    without a geoseg card needs one of them. The card is checked against the graph's band and class counts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    ort = require("onnxruntime")
    threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(path), _options(ort, threads), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise CheckpointError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0]})") from error
    metadata = session.get_modelmeta().custom_metadata_map
    chosen = resolve_card(preset, card)
    if chosen is None:
        if CARD_METADATA_KEY not in metadata:
            raise CheckpointError(
                f"{path}: the ONNX model carries no geoseg card (not exported by 'geoseg export'); "
                "pass card=FILE or preset=NAME"
            )
        chosen = ModelCard.from_json(metadata[CARD_METADATA_KEY])
    (graph_input,), (graph_output, *_) = session.get_inputs(), session.get_outputs()
    bands, classes = graph_input.shape[1], graph_output.shape[1]
    if isinstance(bands, int) and bands != chosen.num_bands:
        raise CheckpointError(
            f"{path}: the card lists {chosen.num_bands} bands ({','.join(chosen.bands)}) "
            f"but the ONNX model takes {bands}"
        )
    if isinstance(classes, int) and classes != chosen.num_classes:
        raise CheckpointError(
            f"{path}: the card lists {chosen.num_classes} classes but the ONNX model outputs {classes}"
        )
    outputs = metadata.get(OUTPUT_KIND_KEY, "logits")
    float32_layers = metadata.get(FLOAT32_LAYERS_KEY)
    network = OnnxNetwork(
        path,
        chosen,
        raw_input=OUTPUT_KIND_KEY in metadata,
        outputs=outputs,
        float32_layers=None if float32_layers is None else json.loads(float32_layers),
    )
    network._sessions["cpu"] = (threads, session)
    return network, chosen
