"""geoseg.raster.classes: class rasters are read as stored, so a band scale or offset is refused."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import classes_and_transparency, write_geotiff

from geoseg.cli.main import cli


def scaled(path, scale: float, offset: float):
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = [scale], [offset]
    return path


@pytest.mark.parametrize("role", ["vectorize", "quicklook", "evaluate prediction", "evaluate truth", "train"])
def test_class_indices_with_a_scale_or_offset_are_refused_not_read_raw(tmp_path, role):
    """A class or label raster with a band offset of 1 shows classes 1..4 in QGIS and gdalinfo's terms, but
    every command read the stored 0..3, silently: scores, polygons and training targets of other classes.
    Class indices carry no unit: the metadata is refused, naming the fix."""
    classes, _ = classes_and_transparency(32, 32)
    plain = write_geotiff(tmp_path / "plain.tif", classes[None])
    odd = scaled(write_geotiff(tmp_path / "odd.tif", classes[None]), 1.0, 1.0)
    image = write_geotiff(tmp_path / "odd_image.tif", np.full((3, 32, 32), 100, np.uint8))
    args = {
        "vectorize": ["vectorize", str(odd), "-o", str(tmp_path / "p.gpkg")],
        "quicklook": ["quicklook", str(odd), "-o", str(tmp_path / "q.png")],
        "evaluate prediction": ["evaluate", str(odd), str(plain)],
        "evaluate truth": ["evaluate", str(plain), str(odd)],
        "train": [
            "train",
            "--images",
            str(image),
            "--labels",
            str(odd),
            "--preset",
            "potsdam",
            "--crop",
            "32",
        ]
        + ["--architecture", "macunet", "--steps", "1", "-o", str(tmp_path / "m.safetensors")],
    }[role]

    result = CliRunner().invoke(cli, [*args, "-q"] if role != "quicklook" else args)

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {odd}: band 1 has scale 1 and offset 1, but class indices are read as stored; "
        f"remove them (gdal_edit.py -scale 1 -offset 0 {odd}) or apply them first (gdal_translate -unscale)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.tif", "odd_image.tif", "plain.tif"]
