"""QGIS styles (geoseg.styles): the XML QGIS reads, the GeoPackage's ``layer_styles`` row, the ``.qml`` beside
other vector formats, GeoPackage 1.2. Offline: the files are parsed here, QGIS is not needed (a headless
QGIS 3.22 showed the class raster's legend as exactly the classes, see geoseg.styles)."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from helpers import write_geotiff
from rasterio.transform import from_origin

from geoseg.errors import OutputError
from geoseg.model.card import ClassInfo
from geoseg.raster.classes import read_classes
from geoseg.styles import (
    class_raster_qml,
    confidence_qml,
    polygons_qml,
    polygons_sld,
    style_sidecar,
    write_geopackage_style,
)
from geoseg.vector.vectorize import vectorize

CLASSES = [
    ClassInfo("water", (0, 0, 255)),
    ClassInfo("land & <sea>", (12, 200, 7)),
    ClassInfo("road", (255, 255, 0)),
]


def _palette(qml: str) -> list[tuple[str, str, str, str]]:
    root = ET.fromstring(qml)
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    return [
        (e.get("value"), e.get("label"), e.get("color"), e.get("alpha"))
        for e in renderer.iter("paletteEntry")
    ]


def _categories(qml: str) -> list[tuple[str, str]]:
    """(class name, fill colour) of each category of a categorized polygon style."""
    renderer = ET.fromstring(qml).find("renderer-v2")
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "class_name")
    symbols = {s.get("name"): s for s in renderer.find("symbols")}
    found = []
    for category in renderer.find("categories"):
        assert category.get("value") == category.get("label") and category.get("render") == "true"
        layer = symbols[category.get("symbol")].find("layer")
        options = {o.get("name"): o.get("value") for o in layer.find("Option")}
        legacy = {p.get("k"): p.get("v") for p in layer.findall("prop")}
        assert options == legacy and options["style"] == "solid"
        found.append((category.get("value"), options["color"]))
    return found


def test_class_raster_style_lists_exactly_the_classes_in_their_names_and_colours():
    """Not 256 rows: no entry for 255 (nodata, transparent) nor any value beyond the classes."""
    assert _palette(class_raster_qml(CLASSES)) == [
        ("0", "water", "#0000ff", "255"),
        ("1", "land & <sea>", "#0cc807", "255"),
        ("2", "road", "#ffff00", "255"),
    ]


def test_confidence_style_is_a_viridis_ramp_over_0_to_255_labelled_0_to_100_percent():
    renderer = ET.fromstring(confidence_qml()).find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "255")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    items = [(i.get("value"), i.get("label"), i.get("color")) for i in shader.findall("item")]
    assert items == [
        ("0", "0 %", "#440154"),
        ("63.75", "25 %", "#3b528b"),
        ("127.5", "50 %", "#21918c"),
        ("191.25", "75 %", "#5ec962"),
        ("255", "100 %", "#fde725"),
    ]
    legend = shader.find("rampLegendSettings")
    assert (legend.get("minimumLabel"), legend.get("maximumLabel")) == ("0 %", "100 %")


def test_polygon_style_categorizes_by_class_name_in_the_class_colours():
    assert _categories(polygons_qml(CLASSES)) == [
        ("water", "0,0,255,255"),
        ("land & <sea>", "12,200,7,255"),
        ("road", "255,255,0,255"),
    ]


def test_sld_has_one_rule_per_class_filtering_on_its_name():
    ns = {"se": "http://www.opengis.net/se", "ogc": "http://www.opengis.net/ogc"}
    root = ET.fromstring(polygons_sld(CLASSES, "polygons").encode())
    rules = root.findall(".//se:Rule", ns)
    assert [r.find("ogc:Filter//ogc:Literal", ns).text for r in rules] == [c.name for c in CLASSES]
    assert [r.find(".//se:SvgParameter", ns).text for r in rules] == ["#0000ff", "#0cc807", "#ffff00"]


def test_a_geopackage_has_its_style_inside_and_other_formats_beside_them(tmp_path):
    assert style_sidecar(tmp_path / "a.classes.tif") == tmp_path / "a.classes.qml"
    assert style_sidecar(tmp_path / "p.fgb") == tmp_path / "p.qml"
    assert style_sidecar(tmp_path / "p.GPKG") is None


# --- through vectorize -----------------------------------------------------------------------------------


@pytest.fixture
def classes_tif(tmp_path):
    values = np.zeros((40, 60), np.uint8)
    values[10:30, 10:30] = 1
    values[:, 50:] = 2
    values[:5, :5] = 255
    path = tmp_path / "classes.tif"
    return write_geotiff(
        path, values, crs="EPSG:32633", transform=from_origin(500000, 6000000, 1, 1), nodata=255,
        classes=([c.name for c in CLASSES], [c.color for c in CLASSES]),
    )  # fmt: skip


def test_classes_are_read_back_from_a_class_raster(classes_tif):
    with rasterio.open(classes_tif) as dataset:
        assert read_classes(dataset) == CLASSES


def test_a_geopackage_of_polygons_is_version_1_2_with_a_default_style_row(classes_tif, tmp_path):
    result = vectorize(classes_tif, tmp_path / "p.gpkg", layer="fields")
    assert result.style is None and "style" not in result.to_dict()
    with sqlite3.connect(tmp_path / "p.gpkg") as db:
        assert db.execute("PRAGMA application_id").fetchone() == (0x47504B47,)  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone() == (10200,)
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, "
            "styleSLD, useAsDefault, description, owner, ui, update_time FROM layer_styles"
        ).fetchall()
        contents = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()
    assert contents == [("attributes",)]  # a registered table: GDAL's validator accepts the file
    (row,) = rows
    assert row[:5] == ("", "", "fields", "geom", "fields") and row[7] == 1 and row[11]
    assert _categories(row[5]) == [(c.name, ",".join(map(str, c.color)) + ",255") for c in CLASSES]
    assert "<se:Name>road</se:Name>" in row[6]


@pytest.mark.parametrize("suffix", [".fgb", ".geojson", ".shp", ".parquet"])
def test_other_vector_formats_get_a_qml_beside_them_listed_in_the_result(classes_tif, tmp_path, suffix):
    out = tmp_path / "out" / f"p{suffix}"
    out.parent.mkdir()
    result = vectorize(classes_tif, out)
    assert result.style == tmp_path / "out" / "p.qml" and result.to_dict()["style"] == str(result.style)
    assert _categories(result.style.read_text(encoding="utf-8"))[0] == ("water", "0,0,255,255")
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]


def test_no_styles_writes_none(classes_tif, tmp_path):
    vectorize(classes_tif, tmp_path / "p.fgb", styles=False)
    vectorize(classes_tif, tmp_path / "p.gpkg", styles=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "p.fgb", "p.gpkg"]
    with sqlite3.connect(tmp_path / "p.gpkg") as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchall()


def test_a_raster_without_class_names_gives_unstyled_polygons(tmp_path):
    path = tmp_path / "ids.tif"
    write_geotiff(
        path, np.ones((1, 8, 8), np.uint8), crs="EPSG:32633", transform=from_origin(500000, 6000000, 1, 1)
    )
    assert vectorize(path, tmp_path / "p.fgb").style is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.tif", "p.fgb"]


def test_an_existing_style_is_replaced_only_when_asked(classes_tif, tmp_path):
    (tmp_path / "p.qml").write_text("mine")
    with pytest.raises(OutputError, match="p.qml: output exists; pass overwrite=True"):
        vectorize(classes_tif, tmp_path / "p.fgb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "p.qml"]
    vectorize(classes_tif, tmp_path / "p.fgb", overwrite=True)
    assert (tmp_path / "p.qml").read_text().startswith("<!DOCTYPE qgis")


def test_polygons_named_like_their_raster_would_replace_its_style_and_are_refused(classes_tif, tmp_path):
    with pytest.raises(OutputError) as caught:
        vectorize(classes_tif, tmp_path / "classes.fgb")
    assert str(caught.value) == (
        f"{tmp_path / 'classes.fgb'}: its QGIS style {tmp_path / 'classes.qml'} would replace the style of "
        f"{classes_tif}; give the output another name, or pass styles=False"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]
    vectorize(classes_tif, tmp_path / "classes.fgb", styles=False)


def test_a_failed_write_leaves_no_style(classes_tif, tmp_path, monkeypatch):
    import geoseg.styles as styles

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(styles, "polygons_qml", broken)
    with pytest.raises(KeyboardInterrupt):
        vectorize(classes_tif, tmp_path / "p.fgb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_restyling_a_geopackage_layer_replaces_its_row(classes_tif, tmp_path):
    vectorize(classes_tif, tmp_path / "p.gpkg")
    write_geopackage_style(tmp_path / "p.gpkg", "p", CLASSES[:1])
    with sqlite3.connect(tmp_path / "p.gpkg") as db:
        (qml,) = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'p'").fetchone()
    assert _categories(qml) == [("water", "0,0,255,255")]
