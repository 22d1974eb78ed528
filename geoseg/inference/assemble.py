"""Assemble a scene's parts into its final rasters: a GDAL VRT of the parts, copied into a COG.

The VRT (written into the work folder) places every part at its region's offset and carries what the final
raster needs: the input's georeferencing, nodata 255 and the colour table and class names for classes, the
internal mask for confidence and probabilities, band descriptions. The COG copy builds overviews from it
(with all cores for compression) under a temporary name and renames it into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from rasterio.crs import CRS

from geoseg.atomic import atomic_output
from geoseg.inference.grid import Region
from geoseg.inference.outputs import OutputPaths
from geoseg.inference.plan import ScenePlan
from geoseg.model.card import ModelCard
from geoseg.raster.classes import CLASS_NAMES_TAG, NODATA_CLASS, class_colormap
from geoseg.raster.writing import DEFAULT_CODEC, to_cog, write_category_names
from geoseg.styles import class_raster_qml, confidence_qml

CONFIDENCE_DESCRIPTION = "confidence (top class probability x 255)"


def assemble(
    plan: ScenePlan,
    outputs: OutputPaths,
    parts: dict[str, list[tuple[Region, Path]]],
    card: ModelCard,
    overwrite: bool,
    codec: str = DEFAULT_CODEC,
) -> None:
    """Write each raster of ``outputs`` from its ``parts`` (kind -> every region's part), compressed with
    ``codec``, renamed into place (stale ``.aux.xml`` statistics of replaced rasters go when their scene is
    committed, see OutputSet), and the class names side-car and the QGIS styles of ``outputs``."""
    for kind, path in outputs.rasters():
        vrt = parts[kind][0][1].parent / f"{kind}.vrt"  # beside the parts, which it names relative to it
        vrt.write_text(_vrt(plan, kind, card, [(r, path.name) for r, path in parts[kind]]), "utf-8")
        with atomic_output(path, overwrite) as target:
            to_cog(vrt, target, categorical=kind == "classes", codec=codec)
    write_category_names(outputs.classes, card.class_names)
    styles = {"classes.qml": class_raster_qml(card.classes), "confidence.qml": confidence_qml()}
    for kind, path in outputs.style_files():
        path.write_text(styles[kind], encoding="utf-8")


def _vrt(plan: ScenePlan, kind: str, card: ModelCard, parts: list[tuple[Region, str]]) -> str:
    count = card.num_classes if kind == "probabilities" else 1
    lines = [f'<VRTDataset rasterXSize="{plan.width}" rasterYSize="{plan.height}">']
    lines += _georeferencing(plan.georef)
    items = ['<MDI key="AREA_OR_POINT">Point</MDI>'] if plan.georef.get("pixel_is_point") else []
    if kind == "classes":
        items.append(f'<MDI key="{CLASS_NAMES_TAG}">{escape(json.dumps(card.class_names))}</MDI>')
    if items:
        lines.append(f"  <Metadata>{''.join(items)}</Metadata>")
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        if kind == "classes":
            lines.append("    <Description>class</Description>")
            lines.append(f"    <NoDataValue>{NODATA_CLASS}</NoDataValue>")
            lines.append("    <ColorInterp>Palette</ColorInterp>")
            colors = class_colormap([c.color for c in card.classes])
            entries = "".join(
                f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>' for r, g, b, a in colors.values()
            )
            lines.append(f"    <ColorTable>{entries}</ColorTable>")
        else:
            name = CONFIDENCE_DESCRIPTION if kind == "confidence" else card.class_names[band - 1]
            lines.append(f"    <Description>{escape(name)}</Description>")
        lines += _sources(parts, str(band))
        lines.append("  </VRTRasterBand>")
    if kind != "classes":  # validity lives in the internal per-dataset mask of every part
        lines.append('  <MaskBand><VRTRasterBand dataType="Byte">')
        lines += _sources(parts, "mask,1")
        lines.append("  </VRTRasterBand></MaskBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _sources(parts: list[tuple[Region, str]], band: str) -> list[str]:
    """One SimpleSource per part, copied 1:1 to the region's place (the parts sit beside the VRT)."""
    return [
        f'    <SimpleSource><SourceFilename relativeToVRT="1">{escape(name)}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{r.width}" ySize="{r.height}"/>'
        f'<DstRect xOff="{r.x0}" yOff="{r.y0}" xSize="{r.width}" ySize="{r.height}"/></SimpleSource>'
        for r, name in parts
    ]


def _georeferencing(georef: dict[str, Any]) -> list[str]:
    """SRS and GeoTransform, or a GCP list, exactly as the input has them, and its RPCs."""
    lines = _rpc_metadata(georef.get("rpcs"))
    gcps = georef.get("gcps")
    if gcps is not None:
        points, crs = gcps
        projection = quoteattr(_wkt(crs)) if crs else '""'
        lines.append(f"  <GCPList Projection={projection}>")
        for p in points:
            lines.append(
                f"    <GCP Id={quoteattr(str(p.id))} Pixel={quoteattr(repr(float(p.col)))} "
                f"Line={quoteattr(repr(float(p.row)))} X={quoteattr(repr(float(p.x)))} "
                f"Y={quoteattr(repr(float(p.y)))} Z={quoteattr(repr(float(p.z or 0.0)))}/>"
            )
        lines.append("  </GCPList>")
        return lines
    if georef.get("crs") is not None:
        lines.append(f"  <SRS>{escape(_wkt(georef['crs']))}</SRS>")
    transform = georef.get("transform")
    if transform is not None:
        values = np.asarray(transform.to_gdal(), dtype=np.float64)
        lines.append(f"  <GeoTransform>{', '.join(repr(float(v)) for v in values)}</GeoTransform>")
    return lines


def _rpc_metadata(rpcs) -> list[str]:
    """The RPC metadata domain, which the COG copy writes into the GeoTIFF's RPC tag."""
    if rpcs is None:
        return []
    items = "".join(f"<MDI key={quoteattr(k)}>{escape(str(v))}</MDI>" for k, v in rpcs.to_gdal().items())
    return [f'  <Metadata domain="RPC">{items}</Metadata>']


def _wkt(crs: CRS) -> str:
    return CRS.from_user_input(crs).to_wkt()
