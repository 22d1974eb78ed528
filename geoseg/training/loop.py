"""Training a network on labelled rasters: AdamW, soft cross-entropy + Dice, validation after every epoch.

An *epoch* is as many steps as it takes to draw about as many crop pixels as the training rasters hold.
After each epoch the model is scored on the validation rasters (whole images, tiled, with
:mod:`geoseg.metrics`) and written to the output when its mIoU improves (without validation rasters: after
every epoch), atomically and with a complete card. A *state file* next to the output (``NAME.state.pt``:
model, optimizer, step, random generators; plain tensors and strings, loaded with ``weights_only=True``)
is refreshed at epoch ends (at most every ``state_every_s`` seconds, and always at the end), so an
interrupted run continues with ``resume``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from geoseg.atomic import atomic_output, check_output_path
from geoseg.device import autocast_dtype, resolve_device
from geoseg.errors import CheckpointError, ConfigurationError, InputError, check_seed
from geoseg.labels import IGNORE
from geoseg.labels.polygons import VectorLabelOptions, split_layer
from geoseg.labels.raster import LabelEncoding
from geoseg.metrics import confusion_matrix, scores_from_confusion
from geoseg.model.architectures import Architecture, get_architecture, network_label
from geoseg.model.build import build_model
from geoseg.model.card import ModelCard
from geoseg.model.checkpoint import read_state_dict, save_checkpoint, torch_load_weights
from geoseg.model.normalize import normalize
from geoseg.model.presets import own_terms
from geoseg.raster.reading import Scale
from geoseg.training.dataset import (
    CropSampler,
    LabelledRaster,
    check_pairs,
    expand_paths,
    pair_files,
    tile_starts,
    value_range_for,
)
from geoseg.training.losses import segmentation_loss
from geoseg.training.vector_dataset import vector_training_sets

ENCODER_PREFIXES = ("firstconv", "firstbn", "encoder")
STATE_FORMAT = 1
DEFAULT_EPOCHS = 50
LOSS_NAME = "soft cross-entropy (label smoothing 0.05) + Dice"


@dataclass
class TrainingConfig:
    """Hyper-parameters; defaults follow the authors' setup (AdamW 6e-4, encoder ×0.1, weight decay 0.01)."""

    crop: int = 512
    batch_size: int = 8
    epochs: int | None = None  # default DEFAULT_EPOCHS when steps is None too
    steps: int | None = None
    lr: float = 6e-4
    encoder_lr_factor: float = 0.1
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    scales: tuple[float, float] = (0.5, 1.5)
    warmup_steps: int | None = None  # default: 5 % of the steps, at most 100
    label_offset: int = 0
    ignore_index: int | None = None  # default: the card's
    val_fraction: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    half: bool = False  # store the checkpoint's weights as float16
    bands: list[int] | None = None  # --bands: image band numbers in the card's order (default: by name)
    scale: Scale = None  # --scale: raw value range, "auto" (pooled 2-98 percentile) or None (the card's)
    state_every_s: float = 60.0

    def check(self, architecture: Architecture) -> None:
        """Refuse settings no run can use, the crop size as ``architecture``'s input needs it."""
        architecture.check_tile(self.crop, "crop")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size={self.batch_size}: give at least 1")
        if self.epochs is not None and self.steps is not None:
            raise ConfigurationError("give either epochs=N or steps=N, not both")
        for name in ("epochs", "steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"{name}={value}: give at least 1")
        check_seed(self.seed)
        if not self.lr > 0:
            raise ConfigurationError(f"lr={self.lr}: give a positive rate")
        if not 0 <= self.val_fraction < 1:
            raise ConfigurationError(f"val_fraction={self.val_fraction}: give a fraction in [0, 1)")
        lo, hi = self.scales
        if not 0 < lo <= hi:
            raise ConfigurationError(f"scale range must be 0 < low <= high, got {self.scales}")


@dataclass(frozen=True)
class TrainingProgress:
    """What the loop reports to its callback after every step (phase "train") and validation ("validate")."""

    phase: str
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    validation: dict[str, Any] | None = None
    saved: bool = False


@dataclass
class TrainingResult:
    output: Path
    state: Path
    steps: int
    losses: list[float]
    validation: dict[str, Any] | None
    card: ModelCard
    seconds: float
    pairs: int
    validation_pairs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_windows: int = 0  # training crops drawn again because their labels were all ignored


ProgressCallback = Callable[[TrainingProgress], None]


def state_path_for(output: str | os.PathLike) -> Path:
    """Where the resumable state of a run writing ``output`` lives: ``NAME.state.pt`` beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".state.pt")


def curves_path_for(output: str | os.PathLike) -> Path:
    """Where ``geoseg train`` draws the training curves of a run writing ``output``: ``NAME.curves.png``."""
    output = Path(output)
    return output.with_name(output.stem + ".curves.png")


# --- the entry point ----------------------------------------------------------------------------------


def train(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    card: ModelCard,
    architecture: str | None = None,
    backbone: str | None = None,
    val_images: Sequence[str | os.PathLike] = (),
    val_labels: Sequence[str | os.PathLike] = (),
    config: TrainingConfig | None = None,
    resume: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    curves: str | os.PathLike | None = None,
    label_polygons: VectorLabelOptions | None = None,
) -> TrainingResult:
    """Train a network on image/label rasters and write the best checkpoint (with its card) to ``output``.

    ``card`` gives classes, colours, bands and normalisation (a preset's or the user's). ``architecture``
    (``manet``, ``macunet``, ``maresunet``; None: the card's) and ``backbone`` (None: the card's for the
    same architecture, else the architecture's default) choose the network. Every input is checked before
    the first step. ``resume`` continues from a state file; ``init`` starts from the weights of another
    checkpoint (any geoseg or foreign file of the same network, or a torchvision ResNet state dict for the
    encoder of MANet or MAResU-Net), loading every tensor whose name and shape match. ``curves`` is a PNG
    redrawn (atomically) after every epoch with the loss of each step and the validation scores (see
    :func:`curves_path_for`). ``label_polygons`` reads ``labels`` (and ``val_labels``) as one vector file of
    label polygons shared by all images (see :mod:`geoseg.training.vector_dataset`).

    The written card describes this model, not the dataset the preset or card was made for (see
    :func:`_trained_card`).
    """
    config = config or TrainingConfig()
    stated_terms = own_terms(card)
    spec = get_architecture(architecture or card.architecture)
    config.check(spec)
    output = Path(output)
    state_path = state_path_for(output)
    if label_polygons is None:
        pairs, val_pairs = _split_pairs(images, labels, val_images, val_labels, config)
        inputs = [path for pair in (*pairs, *val_pairs) for path in pair]
    else:
        image_paths, val_paths = _vector_inputs(images, labels, val_images, val_labels, config)
        inputs = [*image_paths, *val_paths, *(Path(split_layer(str(s))[0]) for s in (*labels, *val_labels))]
    # no output may be an input, which --overwrite would destroy after the whole run
    inputs += [p for p in (init, resume) if p]
    if resume is None:
        check_output_path(output, overwrite, inputs)
        check_output_path(state_path, overwrite, inputs)
    else:
        check_output_path(output, overwrite=True, inputs=inputs)
    if curves is not None:
        from geoseg.plots.common import require_matplotlib

        require_matplotlib()
        check_output_path(curves, overwrite or resume is not None, inputs)
    architecture = spec.name
    if backbone is None:
        backbone = card.backbone if architecture == card.architecture else spec.default_backbone
    card = ModelCard.from_dict({**card.to_dict(), "architecture": architecture, "backbone": backbone})
    ignore_index = config.ignore_index if config.ignore_index is not None else card.ignore_index
    encoding = LabelEncoding(
        num_classes=card.num_classes,
        colors=tuple(c.color for c in card.classes),
        ignore_index=ignore_index,
        offset=config.label_offset,
    )
    labels_record = None
    if label_polygons is None:
        rasters = check_pairs(pairs, encoding, card.bands, config.crop, config.bands)
        val_rasters = (
            check_pairs(val_pairs, encoding, card.bands, config.crop, config.bands) if val_pairs else []
        )
    else:
        common = dict(
            crop=config.crop, expected_bands=card.bands, bands=config.bands, ignore_index=ignore_index
        )
        sets = vector_training_sets(
            image_paths,
            labels[0],
            label_polygons,
            card.class_names,
            val_fraction=config.val_fraction,
            seed=config.seed,
            **common,
        )
        rasters, val_rasters, labels_record = sets.train, sets.validation, sets.record
        if val_paths:
            val_rasters = vector_training_sets(
                val_paths, val_labels[0], label_polygons, card.class_names, val_fraction=None, **common
            ).validation
    # predict's value-range rules; the range used goes into the card, so predict applies it unasked
    value_range = value_range_for(rasters, config.scale, card.value_range)
    value_range_for(val_rasters, value_range if config.scale == "auto" else config.scale, card.value_range)
    card = ModelCard.from_dict({**card.to_dict(), "value_range": list(value_range)})
    state = _load_state(resume, card) if resume is not None else None

    device = resolve_device(config.device)
    amp = autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    model = build_model(architecture, card.num_classes, backbone=backbone, in_channels=card.num_bands)
    initial = initialise_from(model, init) if init is not None and state is None else None
    init_note, init_license = (initial.note, initial.license) if initial else (None, "")
    model.to(device)
    optimizer = _optimizer(model, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a restored state changes them
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16 and device.type == "cuda")
    steps_per_epoch = max(1, math.ceil(sum(r.area for r in rasters) / (config.crop**2 * config.batch_size)))
    total = config.steps or (config.epochs or DEFAULT_EPOCHS) * steps_per_epoch
    warmup = config.warmup_steps if config.warmup_steps is not None else min(100, total // 20)

    step, best_score, best, history, out_card, earlier_seconds = 0, -math.inf, None, [], card, 0.0
    if state is not None:
        step, best_score, best, history = _restore(state, model, optimizer, scaler, rng, resume)
        earlier_seconds, init_note = float(state["seconds"]), state["init"] or None
        init_license = state.get("init_license", "")  # a state written before licences were kept: unknown
        if step >= total:
            raise ConfigurationError(
                f"{resume}: the run already made {step} steps; "
                "pass a larger steps=N or epochs=N to continue it"
            )
    sampler = CropSampler(rasters, config.crop, rng, config.scales)
    started, last_state_save = time.monotonic(), time.monotonic()
    losses: list[float] = []
    epoch_losses: list[float] = []
    model.train()
    while step < total:
        factor = _lr_factor(step, total, warmup)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        batch, target = sampler.sample(config.batch_size)
        x = normalize(batch.to(device, non_blocking=True), card.value_range, card.mean, card.std)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = segmentation_loss(logits.float(), target, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigurationError(
                f"the loss became {value} at step {step}; try a lower lr=RATE or precision='fp32'"
            )
        losses.append(value)
        epoch_losses.append(value)
        epoch = math.ceil(step / steps_per_epoch)
        lr_now = optimizer.param_groups[-1]["lr"]
        if progress is not None:
            progress(TrainingProgress("train", step, total, epoch, float(np.mean(epoch_losses)), lr_now))
        if step % steps_per_epoch and step != total:
            continue
        # --- end of an epoch: validate, keep the best checkpoint, refresh the state file ---
        metrics = None
        if val_rasters:
            metrics = validate(model, val_rasters, card, config.crop, config.batch_size, device, amp)
            metrics.update(step=step, epoch=epoch)
            model.train()
        score = metrics["mean_iou"] if metrics else float(step)
        score = -1.0 if score is None else score
        saved = score > best_score
        history.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": float(np.mean(epoch_losses)),
                "validation": metrics,
                "step_losses": [round(v, 6) for v in epoch_losses],
            }
        )
        if saved:
            best_score, best = score, metrics
            elapsed = earlier_seconds + time.monotonic() - started
            out_card = _trained_card(
                card,
                config,
                rasters,
                val_rasters,
                step,
                epoch,
                best,
                elapsed,
                init_note,
                device,
                labels_record,
                name=output.stem,
                stated_terms=stated_terms,
                init_license=init_license,
            )
            save_checkpoint(model, out_card, output, half=config.half, overwrite=True)
        if curves is not None:
            from geoseg.plots.curves import plot_training_curves

            plot_training_curves(history, curves, title=output.name)
        if progress is not None:
            progress(
                TrainingProgress(
                    "validate", step, total, epoch, float(np.mean(epoch_losses)), lr_now, metrics, saved
                )
            )
        epoch_losses = []
        if step == total or time.monotonic() - last_state_save >= config.state_every_s:
            seconds = earlier_seconds + time.monotonic() - started
            _save_state(
                state_path,
                model,
                optimizer,
                scaler,
                rng,
                dict(
                    step=step,
                    best_score=best_score,
                    best=best,
                    history=history,
                    seconds=seconds,
                    init=init_note,
                    init_license=init_license,
                ),
                card,
            )
            last_state_save = time.monotonic()
    return TrainingResult(
        output=output,
        state=state_path,
        steps=step,
        losses=losses,
        validation=best,
        card=out_card,
        seconds=earlier_seconds + time.monotonic() - started,
        pairs=len(rasters),
        validation_pairs=len(val_rasters),
        history=history,
        skipped_windows=sampler.skipped,
    )


# --- pieces -------------------------------------------------------------------------------------------


def _split_pairs(images, labels, val_images, val_labels, config: TrainingConfig):
    pairs = pair_files(expand_paths(images, "image"), expand_paths(labels, "label"))
    if bool(val_images) != bool(val_labels):
        raise ConfigurationError("give both val_images=FILES and val_labels=FILES, or neither")
    if val_images:
        if config.val_fraction:
            raise ConfigurationError(
                "give either val_images=FILES and val_labels=FILES or val_fraction=F, not both"
            )
        val_pairs = pair_files(
            expand_paths(val_images, "validation image"), expand_paths(val_labels, "label")
        )
        overlap = {p[0] for p in pairs} & {p[0] for p in val_pairs}
        if overlap:
            raise InputError(f"{sorted(overlap)[0]}: is both a training and a validation image")
        return pairs, val_pairs
    if config.val_fraction:
        if len(pairs) < 2:
            raise ConfigurationError(
                "val_fraction=F holds out whole images but only one pair was given; "
                "pass val_images=FILES and val_labels=FILES, or more pairs"
            )
        count = min(len(pairs) - 1, max(1, round(config.val_fraction * len(pairs))))
        chosen = set(
            np.random.default_rng(config.seed).choice(len(pairs), size=count, replace=False).tolist()
        )
        return [p for i, p in enumerate(pairs) if i not in chosen], [
            p for i, p in enumerate(pairs) if i in chosen
        ]
    return pairs, []


def _vector_inputs(images, labels, val_images, val_labels, config: TrainingConfig):
    """The image files of a run whose labels are one vector file (and its validation images)."""
    for role, given in (("labels", labels), ("val_labels", val_labels)):
        if len(given) > 1:
            raise ConfigurationError(f"{role}: give one vector file of label polygons, not {len(given)}")
    if bool(val_images) != bool(val_labels):
        raise ConfigurationError("give both val_images=FILES and val_labels=FILES, or neither")
    if val_images and config.val_fraction:
        raise ConfigurationError(
            "give either val_images=FILES and val_labels=FILES or val_fraction=F, not both"
        )
    image_paths = expand_paths(images, "image")
    val_paths = expand_paths(val_images, "validation image") if val_images else []
    overlap = set(image_paths) & set(val_paths)
    if overlap:
        raise InputError(f"{sorted(overlap)[0]}: is both a training and a validation image")
    return image_paths, val_paths


def _optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW with the encoder (pre-trained part in the authors' setup) at a tenth of the learning rate."""
    encoder, rest = [], []
    for name, parameter in model.named_parameters():
        (encoder if name.startswith(ENCODER_PREFIXES) else rest).append(parameter)
    groups = [
        {"params": encoder, "lr": config.lr * config.encoder_lr_factor},
        {"params": rest, "lr": config.lr},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero; a pure function of the step, so resuming needs no state."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def validate(
    model: torch.nn.Module,
    rasters: Sequence[LabelledRaster],
    card: ModelCard,
    tile: int,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """Scores of the model on whole validation rasters, tiled without overlap (edge tiles pulled inside)."""
    model.eval()
    k = card.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    for raster in rasters:
        row0, col0, row1, col1 = raster.extent(tile)
        jobs = [
            (row0 + r, col0 + c, dr, dc)
            for r, dr in tile_starts(row1 - row0, tile)
            for c, dc in tile_starts(col1 - col0, tile)
        ]
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first : first + batch_size]
            reads = [raster.read(r, c, tile) for r, c, _, _ in chunk]
            batch = torch.from_numpy(np.stack([image for image, _ in reads])).to(device)
            x = normalize(batch, card.value_range, card.mean, card.std)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                predicted = model(x).argmax(dim=1).to(torch.uint8).cpu().numpy()
            for (_, _, dr, dc), (_, labels), pred in zip(chunk, reads, predicted, strict=True):
                truth = labels[dr:, dc:]
                guess = pred[dr:, dc:]
                valid = truth != IGNORE
                confusion += confusion_matrix(truth[valid], guess[valid], k)
    scores = scores_from_confusion(confusion)
    return {
        "overall_accuracy": _finite(scores.overall_accuracy),
        "mean_f1": _finite(scores.mean_f1),
        "mean_iou": _finite(scores.mean_iou),
        "per_class_iou": {name: _finite(v) for name, v in zip(card.class_names, scores.iou, strict=True)},
        "per_class_f1": {name: _finite(v) for name, v in zip(card.class_names, scores.f1, strict=True)},
        "pixels": int(confusion.sum()),
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _trained_card(
    card: ModelCard,
    config: TrainingConfig,
    rasters: Sequence[LabelledRaster],
    val_rasters: Sequence[LabelledRaster],
    step: int,
    epoch: int,
    metrics: dict[str, Any] | None,
    seconds: float,
    init_note: str | None,
    device: torch.device,
    labels_record: dict[str, Any] | None = None,
    *,
    name: str,
    stated_terms: tuple[str, str],
    init_license: str,
) -> ModelCard:
    """The card of the trained model. The starting preset or card supplies classes, bands, scaling, GSD
    and tile; what describes a *model* is this run's: ``name`` is the output file's stem, ``data`` names
    the images and labels it was trained on (unless the user's card states its own, ``stated_terms`` from
    :func:`geoseg.model.presets.own_terms`), and ``license`` is claimed only where geoseg knows it: the
    initial weights' licence carries over to weights derived from them (``init_license``, saying so),
    next to one the user's card states; from random weights on the user's data there is none."""
    from geoseg import __version__

    gsds = {round(r.gsd, 6) for r in rasters if r.gsd is not None}
    gsd = gsds.pop() if len(gsds) == 1 and all(r.gsd is not None for r in rasters) else card.gsd
    class_pixels = np.sum([r.class_pixels for r in rasters], axis=0)
    training = {
        "trainer": f"geoseg {__version__} train",
        "steps": step,
        "epochs": epoch,
        "crop": config.crop,
        "batch_size": config.batch_size,
        "optimizer": f"AdamW (lr {config.lr:g}, encoder lr {config.lr * config.encoder_lr_factor:g}, "
        f"weight decay {config.weight_decay:g}), linear warm-up then cosine decay",
        "loss": LOSS_NAME,
        "augmentation": f"crops at scale {config.scales[0]:g}-{config.scales[1]:g}, 90° rotations, flips",
        "label_offset": config.label_offset,
        "input_bands": config.bands or "chosen by name (as predict does)",
        "value_range_from": _range_source(config.scale),
        "seed": config.seed,
        "initial_weights": init_note or "random (no pre-trained encoder)",
        "images": [r.image.name for r in rasters],
        "validation_images": [r.image.name for r in val_rasters],
        "class_pixels": {name: int(n) for name, n in zip(card.class_names, class_pixels, strict=True)},
        "device": device.type,
        "precision": config.precision,
        "seconds": round(seconds, 1),
    }
    if labels_record is not None:
        training["label_polygons"] = labels_record
    accuracy = {"validation": {**metrics, "images": training["validation_images"]}} if metrics else {}
    stated_data, stated_license = stated_terms
    values = card.to_dict()
    values.update(
        name=name,
        data=stated_data or _data_description(rasters, labels_record),
        license="; ".join(t for t in (stated_license, init_license) if t),
        gsd=gsd,
        training=training,
        accuracy=accuracy,
        description=card.description
        or f"{network_label(card.architecture, card.backbone)} trained with geoseg on {len(rasters)} "
        "labelled image(s)",
    )
    return ModelCard.from_dict(values)


_DATA_IMAGES_SHOWN = 5  # a card names the first few training images, not hundreds


def _data_description(rasters: Sequence[LabelledRaster], labels_record: dict[str, Any] | None) -> str:
    """What a run trained on, from its training record: the images (the first few) and a labels file."""
    images = list(dict.fromkeys(r.image.name for r in rasters))
    shown = ", ".join(images[:_DATA_IMAGES_SHOWN]) + (", …" if len(images) > _DATA_IMAGES_SHOWN else "")
    labels = f" (labels: {Path(labels_record['labels']).name})" if labels_record else ""
    return f"geoseg train on {len(images)} labelled image(s): {shown}{labels}"


# --- initial weights ----------------------------------------------------------------------------------


class Initialisation(NamedTuple):
    """What ``--init`` loaded: a note for the training record, and the licence those weights carry over
    (their card's, marked as inherited; empty for a file without a card or licence)."""

    note: str
    license: str


_TORCHVISION_NAMES = (
    (re.compile(r"^conv1\."), "firstconv."),
    (re.compile(r"^bn1\."), "firstbn."),
    (re.compile(r"^layer([1-4])\."), r"encoder\1."),
)


def initialise_from(model: torch.nn.Module, path: str | os.PathLike) -> Initialisation:
    """Copy every tensor of ``path`` whose name and shape match into ``model`` (fine-tuning, or an ImageNet
    ResNet for the encoder); a file with nothing in common is an error."""

    path = Path(path)
    state, embedded = read_state_dict(path)
    own = model.state_dict()
    matched = {}
    for key, tensor in state.items():
        name = key
        if name not in own:  # MACU-Net's own conv1.* must not become a ResNet stem
            for pattern, replacement in _TORCHVISION_NAMES:
                name = pattern.sub(replacement, name)
        if name in own and tuple(own[name].shape) == tuple(tensor.shape):
            matched[name] = tensor.to(own[name].dtype)
    if not matched:
        raise CheckpointError(f"{path}: no tensor matches the {type(model).__name__} by name and shape")
    model.load_state_dict(matched, strict=False)
    terms = embedded.license if embedded else ""
    return Initialisation(
        f"{path.name} ({len(matched)} of {len(own)} tensors)",
        f"{terms} (inherited from the initial weights {path.name})" if terms else "",
    )


# --- state file ---------------------------------------------------------------------------------------


def _range_source(scale: Scale) -> str:
    if scale == "auto":
        return "--scale auto: 2-98 percentile of the training images' valid pixels"
    return "--scale" if scale is not None else "the starting card"


def _signature(card: ModelCard) -> dict[str, Any]:
    return {
        "architecture": card.architecture,
        "backbone": card.backbone,
        "classes": card.class_names,
        "bands": card.bands,
        "value_range": list(card.value_range),
    }


_STATE_KEYS = frozenset(
    [
        "format",
        "model",
        "optimizer",
        "scaler",
        "step",
        "best_score",
        "best",
        "history",
        "seconds",
        "init",
        "signature",
        "numpy_rng",
        "torch_rng",
    ]
)


def _save_state(path, model, optimizer, scaler, rng, progress: dict[str, Any], card: ModelCard) -> None:
    """Everything a run needs to continue, as tensors, numbers and JSON strings (no pickled objects)."""
    payload = {
        "format": STATE_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": int(progress["step"]),
        "best_score": float(progress["best_score"]),
        "best": json.dumps(progress["best"]),
        "history": json.dumps(progress["history"]),
        "seconds": float(progress["seconds"]),
        "init": progress["init"] or "",
        "init_license": progress["init_license"],
        "signature": json.dumps(_signature(card)),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(payload, tmp)


def _load_state(path: str | os.PathLike, card: ModelCard) -> dict[str, Any]:
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: state file not found (it is written beside the output as NAME.state.pt)"
        )
    try:
        state = torch_load_weights(path)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused: not a plain geoseg training state") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: corrupt or truncated training state ({str(error).splitlines()[0]})"
        ) from error
    missing = sorted(_STATE_KEYS - set(state)) if isinstance(state, dict) else ["everything"]
    if missing or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path}: not a geoseg training state "
            f"(format {STATE_FORMAT}; missing {', '.join(missing) or 'none'})"
        )
    saved = json.loads(state["signature"])
    wanted = _signature(card)
    for key in wanted:
        if saved.get(key) != wanted[key]:
            raise ConfigurationError(
                f"{path}: the interrupted run had {key} {saved.get(key)} but this one has {wanted[key]}; "
                "resume with the same options"
            )
    return state


def _restore(state, model, optimizer, scaler, rng, path) -> tuple[int, float, Any, list]:
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: the state does not fit this model ({str(error).splitlines()[0]})"
        ) from error
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return (
        int(state["step"]),
        float(state["best_score"]),
        json.loads(state["best"]),
        json.loads(state["history"]),
    )
