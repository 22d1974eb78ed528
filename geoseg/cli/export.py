"""``geoseg export``: a checkpoint as an ONNX model or a ``torch.export`` program that carries its card."""

from __future__ import annotations

import click

from geoseg.cli.options import card_option, emit_json, json_option, overwrite_option, preset_option


@click.command(short_help="Export a checkpoint to ONNX (.onnx) or torch.export (.pt2).")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="OUT.onnx (onnxruntime, opset 18) or OUT.pt2 (torch.export.load).",
)
@click.option("--logits", is_flag=True, help="Output raw logits instead of class probabilities.")
@preset_option
@card_option
@overwrite_option
@json_option
def export(model, output, logits, preset, card_path, overwrite, as_json) -> None:
    """Export MODEL (a geoseg checkpoint; a foreign one with --preset or --card) for use without geoseg.

    The exported network takes raw pixel values, float32 N×C×H×W in the card's band order, and applies the
    card's value range and normalisation itself; it returns class probabilities N×K×H×W (or logits with
    --logits). Batch, height and width are free; height and width must be multiples of 32. The model card
    (classes, colours, bands...) is stored inside: ONNX metadata_props or the .pt2's extra files, key
    "geoseg.card". `geoseg predict -m OUT.onnx` runs it through geoseg's tiling and blending.

    \b
    geoseg export models/manet_r50_loveda_demo.safetensors -o manet.onnx
    geoseg export model.safetensors -o manet.pt2 --logits
    """
    from geoseg.api import export_model

    result = export_model(model, output, preset=preset, card=card_path, logits=logits, overwrite=overwrite)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"Wrote {result['output']}: {result['format']}, {', '.join(result['bands'])} in, "
            f"{len(result['classes'])} class {result['outputs']} out ({result['seconds']} s)"
        )
