"""``geoseg train``: train or fine-tune MANet on labelled orthophotos into a checkpoint predict runs."""

from __future__ import annotations

import time

import click

from geoseg.cli.options import (
    bands_option,
    card_option,
    checkpoint_output_option,
    device_option,
    emit_json,
    ignore_index_option,
    json_option,
    label_offset_option,
    label_polygon_options,
    overwrite_option,
    precision_option,
    preset_option,
    quiet_option,
    scale_option,
    stderr_is_terminal,
    stderr_progress,
)
from geoseg.model.architectures import ARCHITECTURES, BACKBONES


@click.command(short_help="Train MANet, MACU-Net or MAResU-Net on image/label rasters.")
@click.option(
    "--images",
    multiple=True,
    required=True,
    help="Training images: files, folders or quoted glob patterns (repeat the option for more).",
)
@click.option(
    "--labels",
    multiple=True,
    required=True,
    help="Label rasters (class indices or colours), as --images; or one vector file of label polygons "
    "(.gpkg, .shp, .fgb, .geojson, .parquet; FILE.gpkg:LAYER) with --class-field.",
)
@label_polygon_options
@checkpoint_output_option
@preset_option
@card_option
@click.option(
    "--architecture",
    type=click.Choice(tuple(ARCHITECTURES)),
    default=None,
    help="The network: manet, or its smaller siblings macunet and maresunet. [the card's, else manet]",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONES),
    default=None,
    help="MANet's encoder [resnet50]; MAResU-Net has resnet34, MACU-Net none.",
)
@click.option("--val-images", multiple=True, help="Validation images (scored after every epoch).")
@click.option("--val-labels", multiple=True, help="Validation labels, paired like --labels.")
@click.option(
    "--val-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Hold out this fraction of the image pairs (whole images) for validation instead; with label "
    "polygons, of the spatial units (AOIs or clusters of polygons), never single pixels or windows.",
)
@click.option(
    "--crop",
    type=int,
    default=512,
    show_default=True,
    help="Training crop size (multiple of 32; of 16 for MACU-Net).",
)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--epochs", type=int, default=None, help="Epochs (one epoch draws about the training area once). [50]"
)
@click.option("--steps", type=int, default=None, help="Optimizer steps instead of --epochs.")
@click.option(
    "--lr", type=float, default=6e-4, show_default=True, help="Learning rate (the encoder gets a tenth)."
)
@device_option
@precision_option
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    default=None,
    help="Continue an interrupted run from its state file (OUTPUT's NAME.state.pt).",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from the weights of a checkpoint (fine-tuning) or a torchvision ResNet state dict (encoder).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@label_offset_option
@ignore_index_option
@bands_option
@scale_option
@click.option("--half", is_flag=True, help="Store the checkpoint's weights as float16 (half the size).")
@overwrite_option
@json_option
@quiet_option
def train(
    images: tuple[str, ...],
    labels: tuple[str, ...],
    output: str,
    preset: str | None,
    card_path: str | None,
    architecture: str | None,
    backbone: str | None,
    val_images: tuple[str, ...],
    val_labels: tuple[str, ...],
    val_fraction: float,
    crop: int,
    batch_size: int,
    epochs: int | None,
    steps: int | None,
    lr: float,
    device: str,
    precision: str,
    resume: str | None,
    init: str | None,
    seed: int,
    label_offset: int,
    ignore_index: int | None,
    bands: list[int] | None,
    scale: tuple[float, float] | str | None,
    half: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    label_polygons=None,
) -> None:
    """Train a network on image/label pairs and write the best checkpoint (by validation mIoU) with a complete
    model card, ready for geoseg predict. The classes, colours, bands and normalisation come from --preset or
    --card (a preset takes the normalisation the network's authors used: ImageNet mean/std for MANet, only
    ÷255 for MACU-Net and MAResU-Net). --init starts from a checkpoint's weights or, for MANet and
    MAResU-Net, a torchvision ResNet state dict you hold (e.g. ImageNet resnet34 for MAResU-Net). Images
    pair with labels by name (a.tif ↔ a.png, image_3.png ↔ label_3.png). Every pair is checked before the
    first step. Imagery is read as predict reads it: bands by name or --bands, alpha, nodata and
    masks as masks (such pixels count in neither the loss nor the scores), 16-bit data only with --scale
    (whose range the checkpoint's card records, so predict applies it); a label must lie on its image's grid.
    Labels may be polygons from the GIS instead: --labels LABELS.gpkg --class-field FIELD (any CRS; one
    file for all images, each takes the polygons on it), rasterized on each image's grid (pixel-centre rule,
    or --all-touched; overlaps: the smaller polygon wins unless --priority ranks classes). Without --aoi only
    pixels under a polygon are trained on; inside --aoi areas every other pixel is --background. Crops are
    drawn only where labels are. A state file beside the output lets --resume continue an interrupted run.
    OUTPUT's NAME.curves.png shows the training loss of every step and the validation scores, redrawn
    after every epoch (needs matplotlib).

    \b
    geoseg train --images tiles/images --labels tiles/labels --preset vaihingen \\
        --val-fraction 0.2 --epochs 100 -o vaihingen.safetensors
    geoseg train --images 'img/*.png' --labels 'lbl/*.png' --preset loveda --label-offset 1 \\
        --backbone resnet18 --crop 256 --steps 2000 -o loveda_r18.safetensors
    geoseg train --images tiles/images --labels tiles/labels --preset vaihingen --architecture maresunet \\
        --init resnet34-imagenet.pth --epochs 100 -o maresunet_vaihingen.safetensors
    geoseg train --images ortho/ --labels digitized.gpkg:labels --class-field klasse \\
        --class-map 'Gebouw=building,Weg=road' --aoi digitized.gpkg:areas --background background \\
        --card classes.json --init demo.safetensors --val-fraction 0.2 -o finetuned.safetensors
    """
    from geoseg.api import TrainingConfig
    from geoseg.api import train as run_training
    from geoseg.model.presets import preset_card, resolve_card

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    if not preset and not card_path:
        raise click.UsageError("name the classes with --preset NAME or --card FILE")
    if backbone and architecture and backbone not in ARCHITECTURES[architecture].backbones:
        fits = ", ".join(str(b) for b in ARCHITECTURES[architecture].backbones if b)
        which = f"whose backbone is {fits}" if fits else "which has none: leave --backbone out"
        raise click.UsageError(f"--backbone {backbone} does not fit --architecture {architecture}, {which}")
    from geoseg.labels.polygons import is_vector_path

    vector = [spec for spec in (*labels, *val_labels) if is_vector_path(spec)]
    if vector and label_polygons is None:
        raise click.UsageError(
            f"--labels {vector[0]} is a vector file: name its class column with --class-field"
        )
    if label_polygons is not None and len(vector) != len(labels) + len(val_labels):
        raise click.UsageError("--class-field reads label polygons: --labels must name one vector file")
    if preset:
        card = preset_card(preset, backbone, architecture=architecture or "manet")
    else:
        card = resolve_card(None, card_path)
    config = TrainingConfig(
        crop=crop,
        batch_size=batch_size,
        epochs=epochs,
        steps=steps,
        lr=lr,
        label_offset=label_offset,
        ignore_index=ignore_index,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        precision=precision,
        half=half,
        bands=bands,
        scale=scale,
    )
    curves = _curves_path(output)
    display = _Display(quiet or as_json)
    try:
        result = run_training(
            images,
            labels,
            output,
            card=card,
            architecture=architecture,
            backbone=backbone,
            val_images=val_images,
            val_labels=val_labels,
            config=config,
            resume=resume,
            init=init,
            overwrite=overwrite,
            progress=display.update,
            curves=curves,
            label_polygons=label_polygons,
        )
    finally:
        display.close()
    summary = {
        "output": str(result.output),
        "state": str(result.state),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "validation": result.validation,
        "curves": str(curves) if curves else None,
        "skipped_windows": result.skipped_windows,
    }
    if as_json:
        emit_json(summary)
        return
    best = result.validation
    scores = (
        f" (validation mIoU {_pct(best['mean_iou'])} %, mean F1 {_pct(best['mean_f1'])} %, OA "
        if best
        else ""
    )
    scores += f"{_pct(best['overall_accuracy'])} % at step {best['step']})" if best else ""
    click.echo(f"wrote {result.output}{scores}")
    if result.skipped_windows:
        click.echo(f"skipped {result.skipped_windows} training windows whose labels were all ignored")
    click.echo(f"resumable state: {result.state} (delete it when the run is final)")
    if curves:
        click.echo(f"training curves: {curves}")


def _curves_path(output: str):
    """NAME.curves.png beside the checkpoint; without matplotlib a warning, and training goes on."""
    import warnings

    from geoseg.errors import GeosegError, GeosegWarning
    from geoseg.plots.common import require_matplotlib
    from geoseg.training.loop import curves_path_for

    try:
        require_matplotlib()
    except GeosegError as error:
        warnings.warn(f"no training curves: {error}", GeosegWarning, stacklevel=2)
        return None
    return curves_path_for(output)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


class _Display:
    """A rich progress bar on a terminal; plain log lines (every 30 s and after each validation) otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = None
        self.task = None
        self.last_line = 0.0
        self.started = time.monotonic()
        self.first_step: int | None = None  # a resumed run starts past step 1
        if quiet or not stderr_is_terminal():
            return
        from rich.progress import TextColumn

        self.progress = stderr_progress(
            TextColumn("epoch {task.fields[epoch]} · loss {task.fields[loss]:.4f}")
        )
        self.task = self.progress.add_task("training", total=None, epoch=0, loss=float("nan"))

    def update(self, event) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.update(
                self.task, completed=event.step, total=event.total_steps, epoch=event.epoch, loss=event.loss
            )
            if event.phase == "validate":
                self.progress.console.print(self._validation_line(event))
            return
        now = time.monotonic()
        if self.first_step is None:
            self.first_step = event.step
        if event.phase == "validate":
            click.echo(self._validation_line(event), err=True)
        elif now - self.last_line >= 30 or event.step == self.first_step:
            rate = (now - self.started) / (event.step - self.first_step + 1)
            click.echo(
                f"step {event.step}/{event.total_steps} · epoch {event.epoch} · loss {event.loss:.4f} · "
                f"lr {event.lr:.2e} · {rate:.2f} s/step",
                err=True,
            )
            self.last_line = now

    @staticmethod
    def _validation_line(event) -> str:
        saved = " · saved" if event.saved else ""
        if not event.validation:
            return f"epoch {event.epoch} (step {event.step}) · loss {event.loss:.4f}{saved}"
        v = event.validation
        return (
            f"epoch {event.epoch} (step {event.step}) · loss {event.loss:.4f} · validation mIoU "
            f"{_pct(v['mean_iou'])} % · mF1 {_pct(v['mean_f1'])} % · "
            f"OA {_pct(v['overall_accuracy'])} %{saved}"
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
