"""geoseg.vector.output: an overwritten vector output leaves none of the old one's side-cars."""

from __future__ import annotations

import pytest
from helpers import classes_and_transparency, write_geotiff


def test_overwriting_a_shapefile_with_one_without_crs_leaves_no_stale_prj(tmp_path):
    """The old .prj stayed beside the new .shp: polygons in pixel coordinates were read back in UTM."""
    import pyogrio

    from geoseg.vector.vectorize import vectorize

    classes, _ = classes_and_transparency()
    placed = write_geotiff(tmp_path / "placed.tif", classes[None])
    unplaced = tmp_path / "unplaced.tif"
    write_geotiff(unplaced, classes[None], crs=None, transform=None)
    output = tmp_path / "out" / "map.shp"
    output.parent.mkdir()
    vectorize(placed, output)

    with pytest.warns(UserWarning, match="polygons are in pixel coordinates"):
        vectorize(unplaced, output, overwrite=True)

    assert sorted(p.suffix for p in output.parent.iterdir()) == [".cpg", ".dbf", ".shp", ".shx"]
    assert pyogrio.read_info(output)["crs"] is None
    assert pyogrio.read_info(output)["total_bounds"] == (0.0, 0.0, 16.0, 12.0)
