"""Label polygons → label pixels (geoseg.labels.polygons): reading, mapping, burning rules, exactness."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import write_geotiff
from pyproj import Transformer
from rasterio.crs import CRS

from geoseg.errors import ConfigurationError, GeosegWarning, InputError
from geoseg.labels import IGNORE
from geoseg.labels.polygons import (
    VectorLabelOptions,
    load_label_polygons,
    on_grid,
    parse_class_map,
    spatial_units,
    split_layer,
)
from geoseg.model.card import ClassInfo

NAMES = ["background", "building", "road"]
CRS_RD = CRS.from_epsg(28992)
ORIGIN = (100_000.0, 400_000.0)
TRANSFORM = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])  # 1 m pixels


def _box(col0, row0, col1, row1):
    """A polygon over pixels col0..col1, row0..row1 of TRANSFORM, in metres."""
    x0, y0 = TRANSFORM * (col0, row0)
    x1, y1 = TRANSFORM * (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _write(path, geometries, values=None, field="klasse", crs="EPSG:28992", layer=None):
    fields = {field: np.array(values, dtype=object)} if values is not None else {}
    from pyogrio.raw import write

    write(
        path,
        shapely.to_wkb(np.array(geometries, dtype=object)),
        field_data=list(fields.values()),
        fields=list(fields),
        geometry_type="Unknown",
        crs=crs,
        layer=layer,
        append=layer is not None and path.exists(),
    )
    return path


def _grid(polygons, width=20, height=20):
    grid, hits = on_grid(polygons, CRS_RD, TRANSFORM, width, height)
    return grid, hits


def _labels(path, options=None, width=20, height=20):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeosegWarning)
        polygons = load_label_polygons(path, options or VectorLabelOptions("klasse"), NAMES)
    grid, _ = _grid(polygons, width, height)
    return grid.read(0, 0, height, width)


def test_pixels_take_the_class_of_the_polygon_holding_their_centre(tmp_path):
    path = _write(
        tmp_path / "l.gpkg",
        [_box(2, 3, 5, 6), shapely.box(*TRANSFORM * (10, 10), *TRANSFORM * (10, 10)).buffer(2.4)],
        ["Building", "2"],
    )
    labels = _labels(path)
    assert (labels[3:6, 2:5] == 1).all()
    assert np.count_nonzero(labels == 1) == 9
    # a 2.4 m circle round the corner of pixels (9..10, 9..10): centres within 2.4 m
    rows, cols = np.mgrid[0:20, 0:20]
    inside = (cols + 0.5 - 10) ** 2 + (rows + 0.5 - 10) ** 2 < 2.4**2
    assert np.array_equal(labels == 2, inside)
    assert np.count_nonzero(labels == IGNORE) == 400 - 9 - inside.sum()


def test_all_touched_burns_every_pixel_a_thin_polygon_touches(tmp_path):
    line = _box(2, 5.1, 12, 5.3)  # 0.2 px high: holds no pixel centre
    path = _write(tmp_path / "l.gpkg", [line], ["road"])
    assert (_labels(path) == IGNORE).all()
    touched = _labels(path, VectorLabelOptions("klasse", all_touched=True))
    assert np.count_nonzero(touched == 2) == 10
    assert (touched[5, 2:12] == 2).all()


def test_overlaps_smaller_polygon_wins_then_priority_and_are_counted(tmp_path):
    big, small = _box(0, 0, 10, 10), _box(2, 2, 4, 4)
    path = _write(tmp_path / "l.gpkg", [small, big], ["building", "road"])  # file order must not matter
    with pytest.warns(GeosegWarning, match="1 pair\\(s\\) of label polygons of different classes overlap"):
        polygons = load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    labels = _grid(polygons)[0].read(0, 0, 20, 20)
    assert np.count_nonzero(labels == 1) == 4 and np.count_nonzero(labels == 2) == 96
    ranked = _labels(path, VectorLabelOptions("klasse", priority=("road",)))
    assert np.count_nonzero(ranked == 2) == 100 and np.count_nonzero(ranked == 1) == 0


def test_inside_aois_unlabelled_pixels_are_background_outside_ignored(tmp_path):
    labels_path = _write(tmp_path / "l.gpkg", [_box(2, 2, 4, 4), _box(15, 15, 17, 17)], ["building", "road"])
    aoi = _write(tmp_path / "aoi.gpkg", [_box(0, 0, 10, 10)])
    labels = _labels(labels_path, VectorLabelOptions("klasse", aoi=str(aoi)))
    assert np.count_nonzero(labels == 0) == 96  # background inside the AOI
    assert np.count_nonzero(labels == 1) == 4
    assert np.count_nonzero(labels == 2) == 4  # a label outside the AOI still counts
    assert np.count_nonzero(labels == IGNORE) == 400 - 104


def test_aoi_needs_a_background_class_when_none_is_named_background(tmp_path):
    labels_path = _write(tmp_path / "l.gpkg", [_box(2, 2, 4, 4)], ["building"])
    aoi = _write(tmp_path / "aoi.gpkg", [_box(0, 0, 10, 10)])
    with pytest.raises(ConfigurationError, match="background=CLASS"):
        load_label_polygons(labels_path, VectorLabelOptions("klasse", aoi=str(aoi)), ["building", "road"])


def test_class_map_from_text_or_json_maps_other_names_case_insensitively(tmp_path):
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 2, 2), _box(5, 5, 6, 6)], ["Gebouw", "WEG"])
    labels = _labels(
        path, VectorLabelOptions("klasse", class_map=parse_class_map("gebouw=building,Weg=road"))
    )
    assert np.count_nonzero(labels == 1) == 4 and np.count_nonzero(labels == 2) == 1
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"GEBOUW": "Building", "weg": 2}))
    assert np.array_equal(
        labels, _labels(path, VectorLabelOptions("klasse", class_map=parse_class_map(str(mapping))))
    )


def test_a_value_mapped_twice_to_different_classes_is_refused_in_text_json_and_mappings(tmp_path):
    with pytest.raises(
        ConfigurationError,
        match=r"^class_map=\{'Wasser': 'water', 'wasser': 'road'\}: the value 'wasser' is mapped twice, to "
        "'water' and 'road'; keep one$",
    ):
        parse_class_map("Wasser=water,wasser=road")
    mapping = tmp_path / "map.json"
    mapping.write_text('{"Weg": "road", "Weg": "building"}')
    with pytest.raises(ConfigurationError, match="'Weg' is mapped twice, to 'road' and 'building'"):
        parse_class_map(str(mapping))
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 2, 2)], ["Weg"])
    with pytest.raises(ConfigurationError, match="mapped twice"):
        _labels(path, VectorLabelOptions("klasse", class_map={"Weg": "road", "WEG": "building"}))
    # the same class given twice, in any case, is no conflict
    assert parse_class_map("Weg=road,weg=Road") == {"Weg": "road", "weg": "Road"}


def test_a_class_map_to_an_unknown_class_names_the_value_as_the_user_wrote_it(tmp_path):
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 2, 2)], ["Wasser"])
    with pytest.raises(
        ConfigurationError, match=r"^class_map=\{'Wasser': 'ocean'\}: 'ocean' is no class; classes are"
    ):
        _labels(path, VectorLabelOptions("klasse", class_map=parse_class_map("Wasser=ocean")))


def test_values_mapping_to_no_class_are_refused_with_their_counts(tmp_path):
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 1, 1)] * 4, ["Gebouw", "Weg", "Gebouw", "building"])
    with pytest.raises(
        InputError, match=r"2 value\(s\) of field 'klasse' map to no class: 'Gebouw' \(2\), 'Weg' \(1\)"
    ):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)


def test_missing_field_lists_the_fields(tmp_path):
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 1, 1)], ["building"])
    with pytest.raises(InputError, match="no field 'class'; its fields are klasse"):
        load_label_polygons(path, VectorLabelOptions("class"), NAMES)


def test_multi_layer_geopackage_needs_a_layer_name_listing_the_layers(tmp_path):
    path = tmp_path / "l.gpkg"
    _write(path, [_box(0, 0, 1, 1)], ["building"], layer="buildings")
    _write(path, [_box(3, 3, 4, 4)], ["road"], layer="roads")
    with pytest.raises(InputError, match=r"holds 2 layers \(buildings, roads\); name one as .*l.gpkg:LAYER"):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    assert split_layer(f"{path}:roads") == (str(path), "roads")
    labels = _labels(f"{path}:roads")
    assert np.count_nonzero(labels == 2) == 1 and np.count_nonzero(labels != IGNORE) == 1


def _class_map(path, classes):
    """A class raster on TRANSFORM that names its classes in NAMES with colours, as geoseg predict writes."""
    colours = [(0, 0, 0), (255, 0, 0), (128, 128, 128)]
    return write_geotiff(
        path, classes, crs=CRS_RD, transform=TRANSFORM, nodata=255, dtype="uint8", classes=(NAMES, colours)
    )


def test_geosegs_own_styled_geopackage_reads_without_a_layer_name(tmp_path):
    from geoseg.api import vectorize
    from geoseg.styles import STYLE_TABLE, data_layers

    classes = np.zeros((20, 20), np.uint8)
    classes[2:6, 3:9], classes[12:, :] = 1, 2
    polygons = tmp_path / "map.gpkg"
    vectorize(_class_map(tmp_path / "map.tif", classes), polygons)
    assert sorted(name for name, _ in pyogrio.list_layers(polygons)) == sorted(["map", STYLE_TABLE])
    assert data_layers(polygons) == ["map"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor pyogrio's "More than one layer found"
        assert np.array_equal(_labels(polygons, VectorLabelOptions("class_name")), classes)


def test_two_data_layers_and_a_style_table_are_refused_listing_only_the_data_layers(tmp_path):
    from geoseg.styles import write_geopackage_style

    path = tmp_path / "l.gpkg"
    _write(path, [_box(0, 0, 1, 1)], ["building"], layer="buildings")
    _write(path, [_box(3, 3, 4, 4)], ["road"], layer="roads")
    write_geopackage_style(path, "roads", [ClassInfo(name, (0, 0, 0)) for name in NAMES], "klasse")
    with pytest.raises(InputError, match=r"holds 2 layers \(buildings, roads\); name one as .*l.gpkg:LAYER$"):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)


def test_labels_without_a_crs_are_refused(tmp_path):
    path = _write(tmp_path / "l.gpkg", [_box(0, 0, 1, 1)], ["building"], crs=None)
    with pytest.raises(InputError, match="has no CRS"):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)


def test_an_empty_layer_is_refused(tmp_path):
    path = _write(tmp_path / "l.gpkg", [], [])
    with pytest.raises(InputError, match="holds no features"):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)


def test_an_empty_geojson_is_refused_as_empty_not_as_lacking_the_class_field(tmp_path):
    empty = tmp_path / "empty.geojson"  # a GeoJSON's fields come from its features: an empty one has none
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match=r"empty.geojson: the label layer holds no features$"):
        load_label_polygons(empty, VectorLabelOptions("klasse"), NAMES)
    bare = tmp_path / "bare.geojson"  # features without the field: that is what is said
    bare.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(_box(0, 0, 1, 1)),
                    }
                ],
            }
        )
    )
    with pytest.raises(InputError, match="no field 'klasse'; its fields are \\(none\\)"):
        load_label_polygons(bare, VectorLabelOptions("klasse"), NAMES)


def test_parquet_without_geometry_metadata_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"geometry": shapely.to_wkb([_box(0, 0, 1, 1)]), "klasse": ["building"]}), path)
    with pytest.raises(InputError, match="without GeoParquet 'geo' metadata"):
        load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)


def test_geoparquet_labels_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "l.parquet"
    table = pa.table({"geometry": shapely.to_wkb([_box(0, 0, 2, 1)]), "klasse": ["building"]})
    crs = json.loads(pyproj.CRS.from_epsg(28992).to_json())
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "crs": crs}},
    }
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)
    labels = _labels(path)
    assert np.count_nonzero(labels == 1) == 2


def test_null_and_empty_geometries_are_skipped_and_invalid_ones_repaired_with_counts(tmp_path):
    bowtie = shapely.Polygon([_box(0, 0, 4, 4).exterior.coords[i] for i in (0, 2, 1, 3, 0)])
    path = _write(
        tmp_path / "l.gpkg",
        [None, shapely.Polygon(), bowtie, _box(10, 10, 12, 12)],
        ["road", "road", "building", "road"],
    )
    with pytest.warns(GeosegWarning) as record:
        polygons = load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    messages = [str(w.message) for w in record]
    assert any("repaired 1 invalid label polygon(s)" in m for m in messages)
    assert any("skipped 2 label feature(s) with a null or empty geometry" in m for m in messages)
    assert len(polygons) == 2
    labels = _grid(polygons)[0].read(0, 0, 20, 20)
    assert np.count_nonzero(labels == 2) == 4
    assert np.count_nonzero(labels == 1) == 8  # the bow-tie's two triangles hold 8 pixel centres


def test_a_window_rasterizes_only_the_polygons_that_reach_it(tmp_path):
    boxes = [_box(c, r, c + 1, r + 1) for r in range(0, 200, 2) for c in range(0, 200, 2)]
    path = _write(tmp_path / "l.gpkg", boxes, ["building"] * len(boxes))
    polygons = load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    grid, hits = _grid(polygons, 200, 200)
    assert hits.size == 10_000
    assert grid.tree.query(shapely.box(10, 10, 20, 20)).size == 36  # 6 × 6 of the 10,000
    window = grid.read(10, 10, 10, 10)
    assert np.count_nonzero(window == 1) == 25


def test_windows_read_through_cached_tiles_equal_windows_rasterized_and_tiles_are_made_once(tmp_path):
    from geoseg.labels import polygons as module

    rng = np.random.default_rng(0)
    boxes, classes = [], []
    for _ in range(300):  # overlapping boxes of random classes and sizes over a 600 × 520 raster
        c, r = rng.integers(-20, 600), rng.integers(-20, 520)
        boxes.append(_box(c + 0.3, r + 0.6, c + rng.integers(1, 90) + 0.2, r + rng.integers(1, 90) + 0.7))
        classes.append(NAMES[rng.integers(0, 3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeosegWarning)
        path = _write(tmp_path / "l.gpkg", boxes, classes)
        polygons = load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    grid, _ = _grid(polygons, 600, 520)
    made = []
    rasterize = grid.rasterize
    grid.rasterize = lambda *window: made.append(window) or rasterize(*window)
    for row, col, height, width in [
        (0, 0, 520, 600),
        (250, 250, 20, 20),
        (100, 37, 300, 411),
        (500, 590, 20, 10),
    ]:
        assert np.array_equal(grid.read(row, col, height, width), rasterize(row, col, height, width))
    tiles = -(-520 // module.TILE) * -(-600 // module.TILE)
    assert len(made) == tiles  # the first window made every tile, the others reused them
    assert (512, 512, 8, 88) in made  # the corner tile ends at the raster's edge
    assert np.array_equal(grid.read(-5, 10, 20, 20), rasterize(-5, 10, 20, 20))  # off the raster: direct


def test_spatial_units_are_clusters_of_labels_and_aois(tmp_path):
    path = _write(
        tmp_path / "l.gpkg",
        [_box(0, 0, 2, 2), _box(3, 3, 4, 4), _box(15, 15, 18, 18)],
        ["building", "road", "building"],
    )
    polygons = load_label_polygons(path, VectorLabelOptions("klasse"), NAMES)
    grid, _ = _grid(polygons)
    units = spatial_units(grid, margin=1)
    assert [u.box for u in units] == [(0, 0, 4, 4), (15, 15, 18, 18)]
    assert [u.labels.size for u in units] == [2, 1]


def _oracle_case(shared_data, tmp_path, reproject_to=None):
    from geoseg.api import vectorize
    from geoseg.model.presets import preset_card

    label = shared_data / "labeled" / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    polygons_path = tmp_path / "truth.gpkg"
    vectorize(label, polygons_path)
    if reproject_to is not None:
        meta, _, wkb, values = pyogrio.raw.read(polygons_path, columns=["class_id"])
        move = Transformer.from_crs(meta["crs"], reproject_to, always_xy=True)
        moved = shapely.transform(
            shapely.from_wkb(wkb), lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
        )
        polygons_path = tmp_path / "truth_4326.gpkg"
        from pyogrio.raw import write

        write(
            polygons_path,
            shapely.to_wkb(moved),
            field_data=values,
            fields=["class_id"],
            geometry_type="Polygon",
            crs=reproject_to,
        )
    names = preset_card("potsdam").class_names
    polygons = load_label_polygons(polygons_path, VectorLabelOptions("class_id"), names)
    with rasterio.open(label) as src:
        expected = src.read(1)
        grid, _ = on_grid(polygons, src.crs, src.transform, src.width, src.height)
    return expected, grid


def test_polygons_vectorized_from_a_real_label_raster_give_back_every_pixel(shared_data, tmp_path):
    expected, grid = _oracle_case(shared_data, tmp_path)
    assert np.array_equal(grid.read(0, 0, 512, 512), expected)
    assert np.array_equal(grid.read(100, 37, 200, 300), expected[100:300, 37:337])


def test_polygons_reprojected_to_wgs84_give_back_every_pixel(shared_data, tmp_path):
    expected, grid = _oracle_case(shared_data, tmp_path, reproject_to="EPSG:4326")
    got = grid.read(0, 0, 512, 512)
    differ = np.argwhere(got != expected)
    # tolerated only where a pixel centre lies within 1e-6 px of a (reprojected) polygon edge
    edges = shapely.union_all(shapely.boundary(grid.geometries))
    centres = shapely.points(differ[:, 1] + 0.5, differ[:, 0] + 0.5)
    assert (shapely.distance(centres, edges) <= 1e-6).all() if differ.size else True


def _index_copy(source, target, data=None):
    """``source`` as a plain class-index raster (no colour table), optionally with other values."""
    with rasterio.open(source) as src:
        profile = src.profile
        values = src.read(1) if data is None else data
    profile.update(photometric=None)
    return write_geotiff(target, values, **profile)


@pytest.mark.parametrize("reproject_to", [None, "EPSG:4326"])
def test_evaluate_against_polygons_scores_as_against_the_raster_to_the_last_digit(
    shared_data, tmp_path, reproject_to
):
    from geoseg.api import evaluate

    label = shared_data / "labeled" / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    truth = _index_copy(label, tmp_path / "truth.tif")
    with rasterio.open(truth) as src:
        values = src.read(1)
    predicted = np.roll(values, (3, -5), axis=(0, 1))  # a map that is wrong along every boundary
    predicted[:40, :40] = 4
    prediction = _index_copy(label, tmp_path / "classes.tif", predicted)
    polygons_dir = tmp_path / "polygons"
    polygons_dir.mkdir()
    _oracle_case(shared_data, polygons_dir, reproject_to)
    polygons = polygons_dir / ("truth.gpkg" if reproject_to is None else "truth_4326.gpkg")
    from_raster = evaluate(prediction, truth, preset="potsdam", block_size=200)
    from_polygons = evaluate(
        prediction, polygons, preset="potsdam", block_size=200, label_polygons=VectorLabelOptions("class_id")
    )
    assert from_raster.overall_accuracy < 0.95
    assert np.array_equal(from_polygons.confusion, from_raster.confusion)
    assert from_polygons.to_dict() | {"truth": None} == from_raster.to_dict() | {"truth": None}


def test_components_of_random_graphs_are_those_a_search_finds():
    from geoseg.labels.polygons import _components

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        left, right = rng.integers(0, n, (2, int(rng.integers(0, 60))))
        neighbours = {i: set() for i in range(n)}
        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            neighbours[a].add(b)
            neighbours[b].add(a)
        expected = np.arange(n)
        for start in range(n):  # depth-first search from each node: its component's smallest node
            seen, stack = {start}, [start]
            while stack:
                for other in neighbours[stack.pop()] - seen:
                    seen.add(other)
                    stack.append(other)
            expected[start] = min(seen)
        assert np.array_equal(_components(n, left, right), expected)
