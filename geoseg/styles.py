"""QGIS styles that QGIS applies by itself: a ``.qml`` beside a raster or vector file, or a ``layer_styles``
row inside a GeoPackage.

A GeoTIFF colour table always has 256 entries, so QGIS's legend of a class raster lists 256 rows (the
classes, then black "7" ... "255"), and polygons open uncoloured. QGIS loads ``NAME.qml`` beside
``NAME.tif`` (``NAME.shp``, ``NAME.fgb``...) as the layer's default style, and a GeoPackage's default style
from its ``layer_styles`` table (the OGC/QGIS convention), so these styles give a legend with only the
card's classes, in their names and colours, and the same colours on the polygons. One module for raster
and vector styles: both draw the same classes, and neither the raster nor the vector writers own the other.
The XML is what QGIS 3.22 writes (the oldest QGIS analysts commonly run), cut to the parts that carry the
symbology; newer QGIS reads it too.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from geoseg.model.card import ClassInfo

QGIS_VERSION = "3.22.0-Białowieża"
STYLE_SUFFIX = ".qml"
CLASS_FIELD = "class_name"  # the polygons' attribute the categories match
# the GeoPackage table of styles, as QGIS names it; GDAL lists it as a layer (it is in gpkg_contents)
STYLE_TABLE = "layer_styles"
# the confidence ramp: viridis at 0, 25, 50, 75 and 100 % (stored as probability x 255)
VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def style_sidecar(path: str | os.PathLike) -> Path | None:
    """The ``.qml`` QGIS loads as the default style of the file ``path`` (its name with the suffix replaced);
    None for a GeoPackage, which holds its style inside (:func:`write_geopackage_style`)."""
    path = Path(path)
    return None if path.suffix.lower() == ".gpkg" else path.with_suffix(STYLE_SUFFIX)


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color[:3]))


def _rgba(hex_color: str) -> str:
    """``#rrggbb`` as QGIS's ``r,g,b,a`` (opaque)."""
    return ",".join(str(int(hex_color[k : k + 2], 16)) for k in (1, 3, 5)) + ",255"


def _qgis(body: str, categories: str) -> str:
    return (
        f"{_HEADER}<qgis version={quoteattr(QGIS_VERSION)} styleCategories={quoteattr(categories)}>\n"
        f"{body}</qgis>\n"
    )


def _pipe(renderer: str) -> str:
    """A raster pipe around ``renderer``: nearest-neighbour resampling (classes and percentages must not be
    blended into values they are not), no brightness or hue change."""
    return (
        "  <pipe>\n"
        "    <provider>\n"
        '      <resampling enabled="false" maxOversampling="2" zoomedInResamplingMethod="nearestNeighbour"'
        ' zoomedOutResamplingMethod="nearestNeighbour"/>\n'
        "    </provider>\n"
        f"{renderer}"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128"'
        ' colorizeStrength="100" grayscaleMode="0" saturation="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "    <resamplingStage>resamplingFilter</resamplingStage>\n"
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
    )


# What QGIS writes between a raster renderer's tag and its palette or shader (no stretch: values are classes)
_RASTER_HEADER = (
    "      <rasterTransparency/>\n"
    "      <minMaxOrigin>\n"
    "        <limits>None</limits>\n"
    "        <extent>WholeRaster</extent>\n"
    "        <statAccuracy>Estimated</statAccuracy>\n"
    "        <cumulativeCutLower>0.02</cumulativeCutLower>\n"
    "        <cumulativeCutUpper>0.98</cumulativeCutUpper>\n"
    "        <stdDevFactor>2</stdDevFactor>\n"
    "      </minMaxOrigin>\n"
)


def class_raster_qml(classes: Sequence[ClassInfo]) -> str:
    """A paletted renderer listing exactly ``classes`` (value = index); nodata (255) has no entry and is
    transparent, as is every other value outside the classes."""
    entries = "".join(
        f'        <paletteEntry value="{index}" color="{_hex(c.color)}" alpha="255" '
        f"label={quoteattr(c.name)}/>\n"
        for index, c in enumerate(classes)
    )
    renderer = (
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        f"{_RASTER_HEADER}"
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n"
    )
    return _qgis(_pipe(renderer), "Symbology")


def confidence_qml() -> str:
    """A viridis ramp over the confidence raster's 0..255 (the top class probability x 255), labelled in
    percent; masked pixels stay transparent (GDAL's mask, which QGIS applies)."""
    last = len(VIRIDIS) - 1
    stops = "".join(
        f'          <item value="{255 * i / last:g}" color="{color}" alpha="255" '
        f'label="{100 * i // last} %"/>\n'
        for i, color in enumerate(VIRIDIS)
    )
    ramp_stops = ";".join(f"{i / last:g};{_rgba(color)}" for i, color in enumerate(VIRIDIS) if 0 < i < last)
    renderer = (
        '    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" nodataColor=""'
        ' classificationMin="0" classificationMax="255">\n'
        f"{_RASTER_HEADER}"
        "      <rastershader>\n"
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0"'
        ' minimumValue="0" maximumValue="255" labelPrecision="0">\n'
        '          <colorramp type="gradient" name="[source]">\n'
        '            <Option type="Map">\n'
        f'              <Option type="QString" name="color1" value="{_rgba(VIRIDIS[0])}"/>\n'
        f'              <Option type="QString" name="color2" value="{_rgba(VIRIDIS[-1])}"/>\n'
        '              <Option type="QString" name="discrete" value="0"/>\n'
        '              <Option type="QString" name="rampType" value="gradient"/>\n'
        f'              <Option type="QString" name="stops" value="{ramp_stops}"/>\n'
        "            </Option>\n"
        "          </colorramp>\n"
        f"{stops}"
        '          <rampLegendSettings minimumLabel="0 %" maximumLabel="100 %" prefix="" suffix=""'
        ' direction="0" useContinuousLegend="1" orientation="2"/>\n'
        "        </colorrampshader>\n"
        "      </rastershader>\n"
        "    </rasterrenderer>\n"
    )
    return _qgis(_pipe(renderer), "Symbology")


def _fill_symbol(name: str, color: Sequence[int]) -> str:
    """A plain fill in ``color`` without outline (adjacent polygons of one class read as one area, as in
    the raster); properties both as QGIS 3.22 writes them (``Option``) and as older QGIS reads them."""
    rgba = _rgba(_hex(color))
    props = {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": rgba,
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": "35,35,35,255",
        "outline_style": "no",
        "outline_width": "0.26",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    options = "".join(
        f'            <Option type="QString" name="{k}" value="{v}"/>\n' for k, v in props.items()
    )
    legacy = "".join(f'          <prop k="{k}" v="{v}"/>\n' for k, v in props.items())
    return (
        f'      <symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        f'          <Option type="Map">\n{options}          </Option>\n'
        f"{legacy}"
        "        </layer>\n"
        "      </symbol>\n"
    )


def polygons_qml(classes: Sequence[ClassInfo], field: str = CLASS_FIELD) -> str:
    """A categorized renderer on ``field`` (the class name): one category per class, in its colour."""
    categories = "".join(
        f'      <category render="true" symbol="{i}" value={quoteattr(c.name)} label={quoteattr(c.name)}/>\n'
        for i, c in enumerate(classes)
    )
    symbols = "".join(_fill_symbol(str(i), c.color) for i, c in enumerate(classes))
    renderer = (
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        'enableorderby="0" forceraster="0" referencescale="-1">\n'
        f"    <categories>\n{categories}    </categories>\n"
        f"    <symbols>\n{symbols}    </symbols>\n"
        "  </renderer-v2>\n"
        "  <blendMode>0</blendMode>\n"
        "  <featureBlendMode>0</featureBlendMode>\n"
        "  <layerGeometryType>2</layerGeometryType>\n"
    )
    return _qgis(renderer, "Symbology")


def polygons_sld(classes: Sequence[ClassInfo], layer: str, field: str = CLASS_FIELD) -> str:
    """The same categories as OGC Symbology Encoding 1.1 (what the ``layer_styles`` table's ``styleSLD``
    holds, for clients that read SLD, GeoServer among them)."""
    rules = "".join(
        "        <se:Rule>\n"
        f"          <se:Name>{escape(c.name)}</se:Name>\n"
        "          <ogc:Filter><ogc:PropertyIsEqualTo>"
        f"<ogc:PropertyName>{escape(field)}</ogc:PropertyName><ogc:Literal>{escape(c.name)}</ogc:Literal>"
        "</ogc:PropertyIsEqualTo></ogc:Filter>\n"
        "          <se:PolygonSymbolizer><se:Fill>"
        f'<se:SvgParameter name="fill">{_hex(c.color)}</se:SvgParameter></se:Fill></se:PolygonSymbolizer>\n'
        "        </se:Rule>\n"
        for c in classes
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:se="http://www.opengis.net/se" xmlns:ogc="http://www.opengis.net/ogc" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <NamedLayer>\n"
        f"    <se:Name>{escape(layer)}</se:Name>\n"
        "    <UserStyle>\n"
        f"      <se:Name>{escape(layer)}</se:Name>\n"
        f"      <se:FeatureTypeStyle>\n{rules}      </se:FeatureTypeStyle>\n"
        "    </UserStyle>\n"
        "  </NamedLayer>\n"
        "</StyledLayerDescriptor>\n"
    )


# The table QGIS creates (QgsOgrProviderUtils, GPKG), registered in gpkg_contents as an attributes table
_CREATE_STYLE_TABLE = f"""CREATE TABLE IF NOT EXISTS {STYLE_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)"""


def data_layers(path: str | os.PathLike) -> list[str]:
    """The layers of the vector file ``path`` that hold data: all GDAL lists but the table of QGIS styles,
    which a styled GeoPackage (geoseg's own, or one QGIS saved a style into) lists as a second layer. A
    reader that names none of them reads the one this gives, so a styled file reads as the single layer it
    is (GDAL errors propagate: callers word them)."""
    import pyogrio

    return [str(name) for name, _ in pyogrio.list_layers(path) if str(name).lower() != STYLE_TABLE]


def write_geopackage_style(
    path: str | os.PathLike, layer: str, classes: Sequence[ClassInfo], field: str = CLASS_FIELD
) -> None:
    """Store :func:`polygons_qml` (and its SLD) as the default style of ``layer`` in the GeoPackage
    ``path``, which must be closed by every other writer."""
    connection = sqlite3.connect(os.fspath(path))
    try:
        with connection:
            (geometry_column,) = connection.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
            ).fetchone()
            connection.execute(_CREATE_STYLE_TABLE)
            connection.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                "SELECT ?, 'attributes', ?, '', strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                "WHERE NOT EXISTS (SELECT 1 FROM gpkg_contents WHERE table_name = ?)",
                (STYLE_TABLE,) * 3,
            )
            connection.execute(f"DELETE FROM {STYLE_TABLE} WHERE f_table_name = ?", (layer,))
            connection.execute(
                f"INSERT INTO {STYLE_TABLE} (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
                "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL)",
                (
                    layer,
                    geometry_column,
                    layer,
                    polygons_qml(classes, field),
                    polygons_sld(classes, layer, field),
                    "classes in their colours (geoseg)",
                ),
            )
    finally:
        connection.close()


def write_polygons_style(
    path: str | os.PathLike, layer: str, classes: Sequence[ClassInfo], field: str = CLASS_FIELD
) -> None:
    """Style the closed polygon file ``path`` by ``field``: inside it for a GeoPackage
    (:func:`write_geopackage_style`), else as the ``.qml`` of :func:`style_sidecar` beside it."""
    sidecar = style_sidecar(path)
    if sidecar is None:
        write_geopackage_style(path, layer, classes, field)
    else:
        sidecar.write_text(polygons_qml(classes, field), encoding="utf-8")
