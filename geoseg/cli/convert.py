"""``geoseg convert``: a foreign checkpoint becomes a self-describing geoseg checkpoint."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    card_option,
    checkpoint_output_option,
    emit_json,
    json_option,
    overwrite_option,
    preset_option,
)


@click.command(short_help="Turn a foreign checkpoint into a geoseg .safetensors file.")
@click.argument("source", type=click.Path(dir_okay=False))
@checkpoint_output_option
@preset_option
@card_option
@click.option("--half", is_flag=True, help="Store weights as float16 (half the size).")
@overwrite_option
@json_option
def convert(source, output, preset, card_path, half, overwrite, as_json) -> None:
    """Convert SOURCE (the authors' raw state dict or a GeoSeg Lightning .ckpt) into a geoseg checkpoint.

    The file is read with torch.load(weights_only=True): pickles that could run code are refused. Key names
    are mapped; the network (MANet, MACU-Net or MAResU-Net), backbone and class count are read from the
    tensors; classes, colours and bands come from --preset or --card (a geoseg checkpoint keeps its own card:
    `geoseg convert model.safetensors -o half.safetensors --half`). With a preset, a MACU-Net or MAResU-Net
    checkpoint gets its authors' input scaling (÷255, no mean/std) instead of MANet's ImageNet one.

    \b
    geoseg convert manet_vaihingen.ckpt -o manet_vaihingen.safetensors --preset vaihingen
    geoseg convert model_weights.pth -o mine.safetensors --card my_card.json
    """
    from geoseg.api import convert_checkpoint

    result = convert_checkpoint(source, output, preset=preset, card=card_path, half=half, overwrite=overwrite)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"Wrote {result['output']}: {result['network']}, {result['classes']} classes "
            f"({', '.join(result['class_names'])}), {result['parameters']:,} parameters"
        )
