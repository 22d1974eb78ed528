"""Commands without a network must not import torch (seconds per call in a shell loop over many scenes).

Each command runs in a fresh interpreter, in-process through click, and the interpreter then reports whether
torch ended up in ``sys.modules``; a checkpoint's ``info`` is the control that shows the probe can see torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from affine import Affine
from helpers import write_geotiff

from geoseg.model.checkpoint import default_checkpoint_path

_PROBE = """
import json, sys
from click.testing import CliRunner
from geoseg.cli.main import cli
result = CliRunner().invoke(cli, sys.argv[1:])
print(json.dumps({"exit_code": result.exit_code, "output": result.output, "torch": "torch" in sys.modules}))
"""


def _run(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def class_rasters(tmp_path):
    """A 3-class prediction and a truth raster on one georeferenced 40x30 grid."""
    rng = np.random.default_rng(0)
    paths = []
    for name in ("classes.tif", "truth.tif"):
        path = tmp_path / name
        data = rng.integers(0, 3, (1, 30, 40)).astype("uint8")
        write_geotiff(path, data, crs="EPSG:32631", transform=Affine(0.5, 0, 5e5, 0, -0.5, 6e6))
        paths.append(str(path))
    return paths


def test_info_on_a_raster_does_not_import_torch(class_rasters):
    record = _run("info", class_rasters[0], "--json")
    assert record["exit_code"] == 0, record["output"]
    assert json.loads(record["output"])["width"] == 40
    assert record["torch"] is False


def test_info_on_an_onnx_model_does_not_import_torch(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["scores"])],
        "bare",
        [value("pixels", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [value("scores", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "bare.onnx"))
    record = _run("info", str(tmp_path / "bare.onnx"), "--json")
    assert record["exit_code"] == 0, record["output"]
    described = json.loads(record["output"])
    assert described["card"] is None and described["inputs"] == {"pixels": ["batch", 3, "height", "width"]}
    assert record["torch"] is False


def test_vectorize_does_not_import_torch(class_rasters, tmp_path):
    out = tmp_path / "polygons.gpkg"
    record = _run("vectorize", class_rasters[0], "-o", str(out), "--json")
    assert record["exit_code"] == 0, record["output"]
    assert out.is_file()
    assert record["torch"] is False


def test_evaluate_does_not_import_torch(class_rasters):
    record = _run("evaluate", *class_rasters, "--json")
    assert record["exit_code"] == 0, record["output"]
    assert 0 < json.loads(record["output"])["overall_accuracy"] < 1
    assert record["torch"] is False


def test_quicklook_does_not_import_torch(class_rasters, tmp_path):
    out = tmp_path / "classes.png"
    record = _run("quicklook", class_rasters[0], "-o", str(out))
    assert record["exit_code"] == 0, record["output"]
    assert out.read_bytes().startswith(b"\x89PNG")
    assert record["torch"] is False


@pytest.mark.parametrize(
    "command", ["--help", "info --help", "vectorize --help", "evaluate --help", "quicklook --help"]
)
def test_help_does_not_import_torch(command):
    record = _run(*command.split())
    assert record["exit_code"] == 0, record["output"]
    assert record["torch"] is False


@pytest.mark.slow
def test_the_probe_sees_torch_where_a_network_is_loaded():
    record = _run("info", str(default_checkpoint_path()), "--json")
    assert record["exit_code"] == 0, record["output"]
    assert record["torch"] is True
