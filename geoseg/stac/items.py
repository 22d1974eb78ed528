"""A STAC Item as a scene: the assets' bands the model wants, gathered by a VRT that GDAL reads as it reads
the asset files themselves, never copied.

Archives publish scenes as STAC Items whose assets are single- or multi-band COGs, often remote. geoseg picks
the bands by their common names (``eo:bands`` in STAC 1.0, ``bands`` with ``eo:common_name`` in STAC 1.1) in
the card's band order, or takes the assets ``--assets`` names (a multi-band asset's bands chosen as for the
file given directly), checks that they share one pixel grid, and writes a small VRT over them.

The VRT is how an Item goes through the one reader every raster goes through (:mod:`geoseg.raster.reading`):
the engine, its regions and Dask workers open a scene by one path, so nothing downstream knows of Items. It
carries, band by band as each file states it, what that reader honours: data type, scale and offset, colour
interpretation and table, NBITS; and one mask band that is every asset's own validity by the reader's rule
(:func:`~geoseg.raster.reading.validity`: internal mask, ``.msk`` side-car, alpha, nodata) combined: a pixel
is valid where every asset it is read from holds it valid. ``raster:bands`` nodata, scale and offset apply
where the file says nothing (the asset is then read through a VRT of itself that adds them); where both speak
and disagree, the file wins, with one warning line. Only full-resolution pixels are read, never overviews.
Asset hrefs are URIs (:func:`resolve_href`). Outputs get the assets' CRS and transform.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from xml.sax.saxutils import escape

from rasterio.enums import MaskFlags

from geoseg.atomic import atomic_output
from geoseg.errors import GeosegWarning, InputError

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
    "complex_int16": "CInt16",
    "complex64": "CFloat32",
    "complex128": "CFloat64",
}
# Object-store URI schemes and the GDAL virtual file systems that read them.
_OBJECT_STORES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
HTTP_TIMEOUT_S = 30


def is_stac_item(source: str) -> bool:
    """An input that names a STAC Item: a ``.json`` file or URL, or a STAC API item URL (``.../items/ID``)."""
    text = str(source)
    path = urllib.parse.urlparse(text).path if _is_url(text) else text
    return path.lower().endswith(".json") or (_is_url(text) and "/items/" in path)


@dataclass(frozen=True)
class BandMeta:
    """What an Item says of one band of an asset: its common name and its ``raster:bands`` nodata, scale
    and offset (None where it says nothing)."""

    common_name: str | None
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None


@dataclass(frozen=True)
class ItemBand:
    """One band of the stack: which asset, which band of its file (1-based), and the model band it feeds
    (the VRT band's description, which the engine checks against the card)."""

    asset: str
    band: int
    name: str


@dataclass
class _Asset:
    """An asset as geoseg reads it: its GDAL name (the file, or a VRT of the file adding what the Item says
    and the file does not) and that dataset, open."""

    key: str
    name: str
    dataset: Any


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


def resolve_href(href: str, base: str) -> str:
    """The GDAL path of an asset ``href``, a URI reference (RFC 3986) resolved against ``base`` (the Item's
    location: a local path or a URI).

    ``file:`` URIs and relative references against a local base become local paths, percent-decoded
    (``my%20scene.tif`` names ``my scene.tif``; a file whose name really holds the ``%`` sequence is taken
    when only it exists); ``s3://``, ``gs://`` and ``az://`` become ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``;
    http(s) URLs are read through ``/vsicurl/`` with no folder listing (object stores have none; it costs
    a request and can stall). GDAL paths (``/vsi...``) and absolute local paths are kept as they are.
    """
    if href.startswith("/vsi"):
        return href
    parts = urllib.parse.urlsplit(href)
    if len(parts.scheme) > 1:  # a URI; one letter is a Windows drive
        return _gdal_uri(href)
    if os.path.isabs(href) or href.startswith("/"):
        return href
    base_parts = urllib.parse.urlsplit(base)
    if len(base_parts.scheme) > 1:
        if base_parts.scheme in ("http", "https", "file"):
            return _gdal_uri(urllib.parse.urljoin(base, href))
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(base_parts.path), parts.path))
        return _gdal_uri(urllib.parse.urlunsplit((base_parts.scheme, base_parts.netloc, joined, "", "")))
    folder = os.path.dirname(os.path.abspath(base))
    decoded = os.path.normpath(os.path.join(folder, urllib.parse.unquote(parts.path)))
    literal = os.path.normpath(os.path.join(folder, href))
    return literal if not os.path.exists(decoded) and os.path.exists(literal) else decoded


def _gdal_uri(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"{uri}: a file URI on another host ({parts.netloc}); mount it or copy it")
        return urllib.request.url2pathname(parts.path)
    if scheme in _OBJECT_STORES:
        return _OBJECT_STORES[scheme] + parts.netloc + urllib.parse.unquote(parts.path)
    if scheme in ("http", "https"):
        return "/vsicurl?list_dir=no&url=" + urllib.parse.quote(uri, safe="")
    raise InputError(f"{uri}: GDAL cannot read {parts.scheme}:// URIs (file, http(s), s3, gs and az can be)")


def asset_path(item: dict[str, Any], source: str, key: str) -> str:
    """The GDAL path of asset ``key``: its href resolved against the Item's own location, or against the
    Item's ``self`` link when the Item was read from a local file beside which the asset is not (an Item
    saved from a catalogue or an API, whose relative hrefs speak of where it was published)."""
    href = item["assets"][key].get("href")
    if not isinstance(href, str) or not href:
        raise InputError(f"{source}: asset {key} has no href")
    path = resolve_href(href, source)
    if _is_url(source) or os.path.exists(path) or path.startswith("/vsi"):
        return path
    selves = [
        link["href"]
        for link in item.get("links") or []
        if isinstance(link, dict)
        and link.get("rel") == "self"
        and isinstance(link.get("href"), str)
        and (_is_uri(link["href"]) or os.path.isabs(link["href"]))
    ]
    return resolve_href(href, selves[0]) if selves else path


def band_metadata(asset: dict[str, Any]) -> list[BandMeta]:
    """The Item's word on each band of an asset, in band order: STAC 1.0 ``eo:bands`` (``common_name``) and
    ``raster:bands`` (``nodata``, ``scale``, ``offset``); STAC 1.1 ``bands`` (``eo:common_name``,
    ``nodata``, ``raster:scale``, ``raster:offset``, also given once for all bands on the asset)."""
    eo, raster, bands = (_dicts(asset.get(k)) for k in ("eo:bands", "raster:bands", "bands"))
    metas = []
    for i in range(max(len(eo), len(raster), len(bands))):
        e, r, b = (part[i] if i < len(part) else {} for part in (eo, raster, bands))
        name = e.get("common_name") or b.get("eo:common_name") or b.get("common_name")
        metas.append(
            BandMeta(
                str(name).lower() if name else None,
                _number(r.get("nodata", b.get("nodata", asset.get("nodata")))),
                _number(r.get("scale", b.get("raster:scale", asset.get("raster:scale")))),
                _number(r.get("offset", b.get("raster:offset", asset.get("raster:offset")))),
            )
        )
    return metas


def select_bands(
    item: dict[str, Any], source: str, bands: list[str], assets: list[str] | None
) -> list[tuple[str, int | None, str | None]]:
    """What feeds each model band in ``bands``: (asset, band of its file, model band) by common name, or
    for ``assets`` each named asset in order with its bands (None: the file tells how many; its bands are
    then chosen as the direct reader chooses them, see :func:`_expand`)."""
    catalogue = {
        key: [meta.common_name for meta in band_metadata(asset)]
        for key, asset in item["assets"].items()
        if isinstance(asset, dict)
    }
    if assets is not None:
        missing = [key for key in assets if key not in catalogue]
        if missing:
            raise InputError(
                f"{source}: no asset {', '.join(missing)}; the item has {', '.join(catalogue) or 'none'}"
            )
        chosen: list[tuple[str, int | None, str | None]] = []
        for key in assets:
            names = catalogue[key]
            chosen += [(key, i + 1, None) for i in range(len(names))] if names else [(key, None, None)]
        return chosen
    chosen = []
    for wanted in bands:
        found = [(key, i + 1) for key, names in catalogue.items() for i, n in enumerate(names) if n == wanted]
        if not found:
            offered = sorted({n for names in catalogue.values() for n in names if n})
            raise InputError(
                f"{source}: no asset has a band with common name {wanted!r} (the model takes "
                f"{','.join(bands)}; the item offers {', '.join(offered) or 'no common names'}); "
                "name the assets with assets=[...]"
            )
        chosen.append((*found[0], wanted))
    return chosen


def _expand(
    chosen: list[tuple[str, int | None, str | None]], opened: dict[str, _Asset], source: str, bands: list[str]
) -> list[ItemBand]:
    """``chosen`` as one :class:`ItemBand` per model band. An asset the Item gives no bands for counts its
    data bands (alpha excluded), which are chosen for the model bands they stand for by the direct reader's
    :func:`~geoseg.raster.reading.select_bands` (names, colour interpretation), as if given alone."""
    from geoseg.raster.reading import data_band_indexes
    from geoseg.raster.reading import select_bands as reader_select

    counts = [len(data_band_indexes(opened[key].dataset)) if band is None else 1 for key, band, _ in chosen]
    if sum(counts) != len(bands):
        given = list(dict.fromkeys(key for key, _, _ in chosen))
        raise InputError(
            f"{source}: assets={given} give {sum(counts)} bands, the model takes {len(bands)} "
            f"({','.join(bands)})"
        )
    result: list[ItemBand] = []
    for (key, band, _), count in zip(chosen, counts, strict=True):
        names = bands[len(result) : len(result) + count]
        if band is not None:
            result.append(ItemBand(key, band, names[0]))
            continue
        indexes = reader_select(opened[key].dataset, names, None, f"{source}: asset {key}")
        result += [ItemBand(key, index, name) for index, name in zip(indexes, names, strict=True)]
    return result


@contextlib.contextmanager
def _open_assets(item: dict[str, Any], source: str, keys: list[str]) -> Iterator[dict[str, _Asset]]:
    """The assets ``keys``, open (each once), with the Item's ``raster:bands`` applied where the file says
    nothing (one warning line for all the places where both speak and disagree: the file wins)."""
    from geoseg.raster.reading import open_raster

    opened: dict[str, _Asset] = {}
    conflicts: list[str] = []
    try:
        for key in dict.fromkeys(keys):
            path = asset_path(item, source, key)
            try:
                dataset = open_raster(path, "not a raster GDAL can read")
            except InputError as error:
                raise InputError(f"{source}: asset {key}: {error}") from error
            opened[key] = _Asset(key, path, dataset)
            additions = _additions(dataset, band_metadata(item["assets"][key]), key, conflicts)
            if additions:
                name = _vrt_xml(
                    dataset.width,
                    dataset.height,
                    dataset,
                    [_band_xml(dataset, i, path, i, None, additions.get(i, {})) for i in dataset.indexes],
                    _own_mask_xml(dataset, path),
                )
                dataset.close()
                opened[key] = _Asset(key, name, open_raster(name))
        if conflicts:
            warnings.warn(
                f"{source}: the item's raster:bands disagree with the files, which win: "
                + "; ".join(conflicts),
                GeosegWarning,
                stacklevel=4,
            )
        yield opened
    finally:
        for asset in opened.values():
            asset.dataset.close()


def _additions(dataset, metas: list[BandMeta], key: str, conflicts: list[str]) -> dict[int, dict[str, float]]:
    """Per band (1-based) of ``dataset``, the nodata, scale and offset the Item gives where the file says
    nothing; a value both give differently goes to ``conflicts``."""
    additions: dict[int, dict[str, float]] = {}
    for index, meta in enumerate(metas[: dataset.count], start=1):
        stated = {
            "nodata": dataset.nodatavals[index - 1],
            "scale": dataset.scales[index - 1],
            "offset": dataset.offsets[index - 1],
        }
        scaled = (stated["scale"], stated["offset"]) != (1, 0)  # GDAL's 1 and 0 are also "not set"
        for field in ("nodata", "scale", "offset"):
            value = getattr(meta, field)
            if value is None:
                continue
            if (stated["nodata"] is None) if field == "nodata" else not scaled:
                additions.setdefault(index, {})[field] = value
            elif not _same(value, stated[field]):
                conflicts.append(f"asset {key} band {index} {field} {value:g} (file: {stated[field]:g})")
    return additions


def _own_mask_xml(dataset, path: str) -> str:
    """The mask band of a VRT that is ``dataset`` (at ``path``) band for band: its per-dataset mask (internal,
    ``.msk`` or alpha) if it has one; masks by nodata come from the VRT's bands, alpha bands from their
    colour interpretation."""
    if MaskFlags.per_dataset not in dataset.mask_flag_enums[0]:
        return ""
    return f'  <MaskBand><VRTRasterBand dataType="Byte">{_source(path, "mask,1")}</VRTRasterBand></MaskBand>'


def _band_xml(
    dataset,
    index: int,
    path: str,
    position: int,
    description: str | None,
    additions: dict[str, float],
) -> str:
    """VRT band ``position`` reading band ``index`` of ``dataset`` (at ``path``) as the reader
    reads it there: the same data type, nodata, scale and offset (``additions`` filling what it lacks),
    colour interpretation and table, and NBITS."""
    dtype = dataset.dtypes[index - 1]
    if dtype not in _GDAL_TYPES:
        raise InputError(f"{dataset.name}: bands of data type {dtype} cannot be read")
    lines = [f'  <VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{position}">']
    text = description if description is not None else dataset.descriptions[index - 1]
    if text:
        lines.append(f"    <Description>{escape(text)}</Description>")
    nodata = additions.get("nodata", dataset.nodatavals[index - 1])
    if nodata is not None:
        lines.append(f"    <NoDataValue>{_xml_number(nodata)}</NoDataValue>")
    interp = dataset.colorinterp[index - 1]
    lines.append(f"    <ColorInterp>{interp.name}</ColorInterp>")
    if interp.name == "palette":
        entries = "".join(
            f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
            for _, (r, g, b, a) in sorted(dataset.colormap(index).items())
        )
        lines.append(f"    <ColorTable>{entries}</ColorTable>")
    offset = additions.get("offset", dataset.offsets[index - 1])
    scale = additions.get("scale", dataset.scales[index - 1])
    if (scale, offset) != (1, 0):
        lines.append(f"    <Offset>{_xml_number(offset)}</Offset>")
        lines.append(f"    <Scale>{_xml_number(scale)}</Scale>")
    nbits = dataset.tags(index, ns="IMAGE_STRUCTURE").get("NBITS")
    if nbits:
        lines.append(
            f'    <Metadata domain="IMAGE_STRUCTURE"><MDI key="NBITS">{escape(nbits)}</MDI></Metadata>'
        )
    lines += ["    " + _source(path, str(index)), "  </VRTRasterBand>"]
    return "\n".join(lines)


def _mask_xml(assets: list[_Asset]) -> str:
    """The VRT's mask band: non-zero where every asset in ``assets`` holds the pixel valid by the reader's
    rule (:func:`~geoseg.raster.reading.validity`): the product of, per asset, the union of its masks (a
    sum) and its alpha bands GDAL leaves out. Empty when no asset masks anything."""
    from geoseg.raster.reading import has_mask, validity

    factors: list[str] = []
    for asset in assets:
        if not has_mask(asset.dataset):
            continue
        rule = validity(asset.dataset)
        unions = [_source(asset.name, f"mask,{index}") for index in rule.union]
        if len(unions) == 1:
            factors.append(unions[0])
        else:
            union = _vrt_xml(asset.dataset.width, asset.dataset.height, None, [_derived("sum", unions)])
            factors.append(_source(union, "1"))
        factors += [_source(asset.name, str(index)) for index in rule.alphas]
    if not factors:
        return ""
    if len(factors) == 1:
        band = f'<VRTRasterBand dataType="Byte">{factors[0]}</VRTRasterBand>'
    else:
        band = _derived("mul", factors)
    return f"  <MaskBand>{band}</MaskBand>"


def _derived(function: str, sources: list[str]) -> str:
    """A Byte band computing GDAL's pixel function ``function`` (``sum``, ``mul``) of ``sources`` in double
    precision; results above 255 are clamped to 255, so non-zero stays non-zero."""
    return (
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTDerivedRasterBand">'
        f"<PixelFunctionType>{function}</PixelFunctionType><SourceTransferType>Float64</SourceTransferType>"
        + "".join(sources)
        + "</VRTRasterBand>"
    )


def _source(path: str, band: str) -> str:
    return (
        f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand></SimpleSource>"
    )


def _vrt_xml(width: int, height: int, georeferenced, bands: list[str], mask: str = "") -> str:
    """A VRT of ``width`` × ``height`` with ``bands`` and ``mask``, on the grid of ``georeferenced`` (a
    dataset, or None for a helper band whose grid is its parent's)."""
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if georeferenced is not None:
        if georeferenced.crs:
            lines.append(f"  <SRS>{escape(georeferenced.crs.to_wkt())}</SRS>")
        t = georeferenced.transform
        lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>")
    lines += bands
    if mask:
        lines.append(mask)
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def write_item_vrt(item_bands: list[ItemBand], opened: dict[str, _Asset], path: Path, source: str) -> Path:
    """The VRT of ``item_bands`` at ``path``, written atomically; the assets must share one grid."""
    import rasterio

    from geoseg.raster.grids import check_same_grid

    used = [opened[key] for key in dict.fromkeys(band.asset for band in item_bands)]
    first = used[0]
    for asset in used[1:]:
        check_same_grid(first.dataset, asset.dataset, f"{source}: asset {first.key}", f"asset {asset.key}")
    for band in item_bands:
        if band.band > opened[band.asset].dataset.count:
            count = opened[band.asset].dataset.count
            raise InputError(f"{source}: asset {band.asset} has {count} band(s), not {band.band}")
    xml = _vrt_xml(
        first.dataset.width,
        first.dataset.height,
        first.dataset,
        [
            _band_xml(opened[b.asset].dataset, b.band, opened[b.asset].name, i, b.name, {})
            for i, b in enumerate(item_bands, start=1)
        ],
        _mask_xml(used),
    )
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(xml, encoding="utf-8")
    with rasterio.open(path):  # GDAL accepts what it will read later
        pass
    return path


def item_scene(
    source: str, classes: Path, bands: list[str], assets: list[str] | None = None
) -> tuple[Path, str]:
    """Stack the Item ``source`` for a model taking ``bands``: the VRT (hidden, beside the class raster
    ``classes``, where every worker that writes the outputs can read it; the caller removes it) and the
    Item's id."""
    item = read_item(source)
    chosen = select_bands(item, source, bands, assets)
    with _open_assets(item, source, [key for key, _, _ in chosen]) as opened:
        item_bands = _expand(chosen, opened, source, bands)
        classes.parent.mkdir(parents=False, exist_ok=True)
        vrt = write_item_vrt(item_bands, opened, classes.with_name(f".{classes.stem}.item.vrt"), source)
    return vrt, str(item.get("id", PurePosixPath(source).stem))


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v if isinstance(v, dict) else {} for v in value] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """A ``raster:bands`` number: JSON numbers, or the strings ``nan``, ``inf``, ``-inf`` the extension
    allows for nodata; anything else is not a number and says nothing."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


def _same(a: float, b: float | None) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _xml_number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _is_uri(text: str) -> bool:
    return len(urllib.parse.urlsplit(text).scheme) > 1
