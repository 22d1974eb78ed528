"""geoseg.labels.raster: label rasters decode by colour or index, every alpha band is a mask, and masked
pixels are never decoded."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import POTSDAM_COLORS, classes_and_transparency, expected_scores, write_geotiff
from rasterio.enums import ColorInterp

from geoseg.evaluation import evaluate


@pytest.mark.parametrize("alpha_first", [False, True], ids=["R,G,B,A", "A,R,G,B"])
def test_colour_truth_with_its_alpha_band_anywhere_is_decoded_by_colour_and_masked(tmp_path, alpha_first):
    """ISPRS-style colour truth with an alpha band stored first: its alpha, red and green were read as the
    colour (an error about unknown colours, or wrong classes); transparent pixels hold a non-class colour."""
    classes, alpha = classes_and_transparency()
    rgb = np.array(POTSDAM_COLORS, np.uint8)[classes].transpose(2, 0, 1)
    rgb[:, alpha == 0] = np.array([255, 0, 255], np.uint8)[:, None]  # no class has it: must stay unread
    bands = [alpha[None], rgb] if alpha_first else [rgb, alpha[None]]
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    interp = [ColorInterp.alpha, *interp] if alpha_first else [*interp, ColorInterp.alpha]
    truth = write_geotiff(tmp_path / "truth.tif", np.concatenate(bands), colorinterp=interp)
    prediction = write_geotiff(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts
    assert result["overall_accuracy"] == 1.0


def test_index_truth_with_a_grey_and_alpha_band_is_read_as_indices_masked_by_its_alpha(tmp_path):
    """A one-band index label with an alpha band (a grey+alpha PNG or TIFF) was refused: 'a label raster
    has 1 band (class indices) or 3 bands (colours, 4 with alpha), not 2'."""
    classes, alpha = classes_and_transparency()
    stored = np.where(alpha > 0, classes, 200).astype(np.uint8)  # 200: no class, but transparent
    truth = write_geotiff(
        tmp_path / "truth.tif", np.stack([stored, alpha]), alpha="YES"
    )  # GDAL: band 2 is alpha
    prediction = write_geotiff(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts


def test_index_truth_pixels_its_internal_mask_leaves_out_may_hold_any_value(tmp_path):
    """Masked pixels were decoded before the mask was applied, so a value outside the classes under the
    mask failed the whole evaluation ('label pixels hold value(s) 99 ... outside the 6 classes')."""
    classes, alpha = classes_and_transparency()
    stored = np.where(alpha > 0, classes, 99).astype(np.uint8)
    truth = write_geotiff(tmp_path / "truth.tif", stored[None], mask=alpha)
    prediction = write_geotiff(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts
