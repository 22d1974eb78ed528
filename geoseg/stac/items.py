"""A STAC Item as a scene: the assets whose bands the model wants, stacked by a VRT, never copied.

Archives publish scenes as STAC Items whose assets are single- or multi-band COGs, often remote. geoseg picks
the assets by their bands' common names (``eo:bands`` in STAC 1.0, ``bands`` with ``eo:common_name`` in STAC
1.1) in the card's band order (``--assets`` names them instead), checks that they share one pixel grid, and
writes a small VRT over their hrefs (relative ones resolved against the item; http(s) read through
``/vsicurl/`` with range requests and no folder listing), which the engine then reads like any raster:
outputs get the assets' CRS and transform.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from xml.sax.saxutils import escape

from geoseg.atomic import atomic_output
from geoseg.errors import InputError

_DATA_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32"}
_DATA_TYPES |= {"int32": "Int32", "float32": "Float32", "float64": "Float64"}
HTTP_TIMEOUT_S = 30


def is_stac_item(source: str) -> bool:
    """An input that names a STAC Item: a ``.json`` file or URL, or a STAC API item URL (``.../items/ID``)."""
    text = str(source)
    path = urllib.parse.urlparse(text).path if _is_url(text) else text
    return path.lower().endswith(".json") or (_is_url(text) and "/items/" in path)


@dataclass
class ItemBand:
    """One band of the stack: which asset, which of its bands (1-based), where the asset lives, and the
    model band it feeds (the VRT band's description, which the engine checks against the card)."""

    asset: str
    band: int
    href: str  # a GDAL path: local, or /vsicurl? for http(s)
    name: str


def read_item(source: str) -> dict[str, Any]:
    """The Item's JSON from a local file or an http(s) URL, or a one-line error saying what is wrong."""
    try:
        if _is_url(source):
            with urllib.request.urlopen(source, timeout=HTTP_TIMEOUT_S) as response:
                text = response.read().decode("utf-8")
        else:
            text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise InputError(f"{source}: STAC Item not found") from error
    except (OSError, urllib.error.URLError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: cannot read the STAC Item ({error})") from error
    try:
        item = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not a STAC Item (invalid JSON: {error})") from error
    if (
        not isinstance(item, dict)
        or item.get("type") != "Feature"
        or not isinstance(item.get("assets"), dict)
    ):
        raise InputError(f"{source}: not a STAC Item (expected a GeoJSON Feature with 'assets')")
    return item


def select_bands(
    item: dict[str, Any], source: str, bands: list[str], assets: list[str] | None
) -> list[ItemBand]:
    """The stack for a card's ``bands``: by common name, or all bands of the named ``assets`` in order (an
    asset without band metadata counts as one band)."""
    catalogue = {
        key: _common_names(asset) for key, asset in item["assets"].items() if isinstance(asset, dict)
    }
    if assets is not None:
        missing = [key for key in assets if key not in catalogue]
        if missing:
            raise InputError(
                f"{source}: no asset {', '.join(missing)}; the item has {', '.join(catalogue) or 'none'}"
            )
        chosen = [(key, i + 1) for key in assets for i in range(max(1, len(catalogue[key])))]
        if len(chosen) != len(bands):
            raise InputError(
                f"{source}: --assets {','.join(assets)} give {len(chosen)} bands, "
                f"the model takes {len(bands)} ({','.join(bands)})"
            )
    else:
        chosen = []
        for wanted in bands:
            found = [
                (key, i + 1) for key, names in catalogue.items() for i, n in enumerate(names) if n == wanted
            ]
            if not found:
                offered = sorted({n for names in catalogue.values() for n in names if n})
                raise InputError(
                    f"{source}: no asset has a band with common name {wanted!r} (the model takes "
                    f"{','.join(bands)}; the item offers {', '.join(offered) or 'no common names'}); "
                    "name the assets with --assets"
                )
            chosen.append(found[0])
    return [
        ItemBand(key, band, _gdal_href(item, source, key), name)
        for (key, band), name in zip(chosen, bands, strict=True)
    ]


def write_item_vrt(item_bands: list[ItemBand], path: Path, source: str) -> Path:
    """A VRT stacking ``item_bands`` at ``path``, written atomically; the assets must share one grid and
    one data type."""
    import rasterio

    from geoseg.raster.grids import check_same_grid
    from geoseg.raster.reading import open_raster

    opened: dict[str, Any] = {}
    try:
        for band in item_bands:
            if band.asset not in opened:
                opened[band.asset] = open_raster(band.href, f"asset {band.asset} of {source} is not a raster")
        first_key, first = next(iter(opened.items()))
        for key, dataset in opened.items():
            check_same_grid(first, dataset, f"{source}: asset {first_key}", f"asset {key}")
            if dataset.dtypes[0] != first.dtypes[0]:
                raise InputError(
                    f"{source}: asset {first_key} is {first.dtypes[0]} but {key} is {dataset.dtypes[0]}; "
                    "the stacked bands must share one data type"
                )
        for band in item_bands:
            if band.band > opened[band.asset].count:
                raise InputError(
                    f"{source}: asset {band.asset} has {opened[band.asset].count} band(s), not {band.band}"
                )
        xml = _vrt_xml(item_bands, opened, first)
    finally:
        for dataset in opened.values():
            dataset.close()
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(xml, encoding="utf-8")
    with rasterio.open(path):  # GDAL accepts what it will read later
        pass
    return path


def _vrt_xml(item_bands: list[ItemBand], opened: dict[str, Any], first) -> str:
    data_type = _DATA_TYPES.get(first.dtypes[0])
    if data_type is None:
        raise InputError(f"assets of data type {first.dtypes[0]} cannot be stacked")
    lines = [f'<VRTDataset rasterXSize="{first.width}" rasterYSize="{first.height}">']
    if first.crs:
        lines.append(f"  <SRS>{escape(first.crs.to_wkt())}</SRS>")
    t = first.transform
    lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>")
    for index, band in enumerate(item_bands, start=1):
        dataset = opened[band.asset]
        nodata = dataset.nodatavals[band.band - 1]
        lines.append(f'  <VRTRasterBand dataType="{data_type}" band="{index}">')
        lines.append(f"    <Description>{escape(band.name)}</Description>")
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
        size = f'xOff="0" yOff="0" xSize="{first.width}" ySize="{first.height}"'
        lines += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="0">{escape(band.href)}</SourceFilename>',
            f"      <SourceBand>{band.band}</SourceBand>",
            f"      <SrcRect {size}/>",
            f"      <DstRect {size}/>",
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _common_names(asset: dict[str, Any]) -> list[str | None]:
    """Common names of an asset's bands, lower-case: STAC 1.0 ``eo:bands`` or STAC 1.1 ``bands``."""
    bands = asset.get("eo:bands") or asset.get("bands") or []
    names = []
    for band in bands if isinstance(bands, list) else []:
        name = band.get("common_name") or band.get("eo:common_name") if isinstance(band, dict) else None
        names.append(str(name).lower() if name else None)
    return names


def _gdal_href(item: dict[str, Any], source: str, key: str) -> str:
    """The asset's href as GDAL opens it: relative hrefs resolved against the item, http(s) via /vsicurl/."""
    href = item["assets"][key].get("href")
    if not isinstance(href, str) or not href:
        raise InputError(f"{source}: asset {key} has no href")
    if _is_url(source) and not _is_url(href) and not href.startswith("/vsi"):
        href = urllib.parse.urljoin(source, href)
    elif not _is_url(href) and not href.startswith("/vsi"):
        base = Path(source).parent
        href = os.path.normpath(base / href) if not PurePosixPath(href).is_absolute() else href
    if href.startswith(("http://", "https://")):
        # no folder listing per asset (object stores have none; it costs a request and can stall)
        return "/vsicurl?list_dir=no&url=" + urllib.parse.quote(href, safe="")
    return href


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def item_scene(
    source: str, classes: Path, bands: list[str], assets: list[str] | None = None
) -> tuple[Path, str]:
    """Stack the Item ``source`` for a model taking ``bands``: the VRT (hidden, beside the class raster
    ``classes``, where every worker that writes the outputs can read it; the caller removes it) and the
    Item's id."""
    item = read_item(source)
    item_bands = select_bands(item, source, bands, assets)
    classes.parent.mkdir(parents=False, exist_ok=True)
    vrt = write_item_vrt(item_bands, classes.with_name(f".{classes.stem}.item.vrt"), source)
    return vrt, str(item.get("id", PurePosixPath(source).stem))
