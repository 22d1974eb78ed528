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
@click.option(
    "--for",
    "target",
    type=click.Choice(["deepness"]),
    default=None,
    help="deepness: an .onnx the QGIS Deepness plugin loads (fixed tile, its metadata keys).",
)
@click.option(
    "--tile",
    type=click.IntRange(min=32),
    default=None,
    help="Fix the input's height and width to this many px (a multiple of the network's input multiple). "
    "Default: free, or the card's with --for deepness.",
)
@preset_option
@card_option
@overwrite_option
@json_option
def export(model, output, logits, target, tile, preset, card_path, overwrite, as_json) -> None:
    """Export MODEL (a geoseg checkpoint; a foreign one with --preset or --card) for use without geoseg.

    The exported network takes raw pixel values, float32 N×C×H×W in the card's band order, and applies the
    card's value range and normalisation itself; it returns class probabilities N×K×H×W (or logits with
    --logits). Batch, height and width are free (height and width multiples of 32) unless --tile fixes them.
    The model card (classes, colours, bands...) is stored inside: ONNX metadata_props or the .pt2's extra
    files, key "geoseg.card". `geoseg predict -m OUT.onnx` runs it through geoseg's tiling and blending.

    --for deepness writes what the QGIS Deepness plugin reads: a fixed tile (the card's, or --tile), free
    batch, and its metadata (model type, class names, resolution in cm/px, tile size, overlap in %, and a
    standardisation that hands the graph the layer's raw values).

    \b
    geoseg export models/manet_r50_loveda_demo.safetensors -o manet.onnx
    geoseg export model.safetensors -o manet.pt2 --logits
    geoseg export models/manet_r50_loveda_demo.safetensors -o manet_deepness.onnx --for deepness
    """
    from geoseg.api import export_model

    result = export_model(
        model,
        output,
        preset=preset,
        card=card_path,
        logits=logits,
        tile=tile,
        target=target,
        overwrite=overwrite,
    )
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"Wrote {result['output']}: {result['format']}, {', '.join(result['bands'])} in, "
            f"{len(result['classes'])} class {result['outputs']} out"
            + (f", tiles of {result['tile']} px" if result["tile"] else "")
            + (f", for {result['for']}" if result["for"] else "")
            + f" ({result['seconds']} s)"
        )
