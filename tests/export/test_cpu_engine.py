"""The CPU engine: which runtime runs the network (``--engine``), the export cache, int8, and reports that
say what ran. Plumbing runs on a small random MANet (ResNet-18, 64 px tiles) and a real 383×232 crop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import rasterio
import torch
from click.testing import CliRunner
from helpers import PixelNet, count_calls, write_geotiff, write_scene, write_small_checkpoint

import geoseg.export.exporter
import geoseg.export.metadata
import geoseg.export.quantize
from geoseg.cli.main import cli
from geoseg.device import resolve_precision
from geoseg.errors import AgreementError, ConfigurationError, GeosegWarning
from geoseg.export.cache import cached_file
from geoseg.export.cpu_engine import calibration_tiles, onnx_network, resolve_engine
from geoseg.export.metadata import OUTPUT_KIND_KEY
from geoseg.export.quantize import quantize_int8
from geoseg.export.runtime import load_onnx
from geoseg.inference.batch import predict
from geoseg.inference.plan import plan_scene
from geoseg.model.card import ModelCard
from geoseg.model.manet import build_manet

CPU = torch.device("cpu")
SCENE = "sample_data/netherlands_0p25m_epsg28992.tif"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "net.safetensors")


@pytest.fixture(scope="module")
def crop(shared_data):
    return shared_data / "variants" / "colorado_hro_0p15m.tif"


@pytest.fixture
def exports(monkeypatch, tmp_path_factory):
    """Counts the network exports into a cache of this test's own (a hit makes none; the session's cache may
    already hold an export of the same model from another test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    return count_calls(monkeypatch, geoseg.export.exporter, "export_program")


def _predict(*args: str):
    return CliRunner().invoke(cli, ["predict", *args, "--json", "--quiet"])


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# --- the cache -------------------------------------------------------------------------------------------


def _builder(counter: list[int], payload: bytes = b"graph", pause: float = 0.0):
    def build(path: Path) -> None:
        counter[0] += 1
        threading.Event().wait(pause)
        path.write_bytes(payload)

    return build


def test_a_cached_file_is_built_once(tmp_path):
    builds = [0]
    first = cached_file("net-fp32", {"model": "a"}, _builder(builds), folder=tmp_path)
    second = cached_file("net-fp32", {"model": "a"}, _builder(builds), folder=tmp_path)
    assert (builds[0], first.built, second.built, second.seconds) == (1, True, False, 0.0)
    assert second.path == first.path and first.path.read_bytes() == b"graph"
    cached_file("net-fp32", {"model": "b"}, _builder(builds), folder=tmp_path)  # another model: built
    assert builds[0] == 2


def test_a_damaged_cached_file_is_rebuilt_with_one_warning(tmp_path):
    builds = [0]
    path = cached_file("net-fp32", {"model": "a"}, _builder(builds), folder=tmp_path).path
    path.write_bytes(b"grap")  # a copy cut short
    with pytest.warns(GeosegWarning, match="damaged") as caught:
        again = cached_file("net-fp32", {"model": "a"}, _builder(builds), folder=tmp_path)
    assert (len(caught), builds[0], again.built, again.path.read_bytes()) == (1, 2, True, b"graph")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [again.path.name]


def test_concurrent_builders_leave_one_valid_file_built_once(tmp_path):
    builds, results = [0], []

    def run():
        results.append(cached_file("net", {"model": "a"}, _builder(builds, pause=0.3), folder=tmp_path))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds[0] == 1
    assert len({r.path for r in results}) == 1
    assert [p.read_bytes() for p in tmp_path.glob("*.onnx")] == [b"graph"]


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path):
    def failing(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        cached_file("net", {"model": "a"}, failing, folder=tmp_path)
    assert list(tmp_path.glob("*.onnx")) == []


def test_a_remembered_refusal_is_raised_again_without_building(tmp_path):
    """A build refused for reasons its key names is not tried again; another key is, and a damaged record
    of the refusal (bytes that no longer match its name) is dropped with one warning and the build tried."""
    builds = [0]

    def refusing(path: Path) -> None:
        builds[0] += 1
        path.write_bytes(b"half")
        raise AgreementError("--precision int8: refused")

    def get(parts: dict):
        return cached_file("net-int8", parts, refusing, folder=tmp_path, remember=AgreementError)

    for _ in range(2):
        with pytest.raises(AgreementError, match="^--precision int8: refused$"):
            get({"calibration": "a"})
    assert builds[0] == 1
    (refusal,) = tmp_path.glob("*.refused")
    assert list(tmp_path.glob("*.onnx")) == [] and not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(AgreementError):
        get({"calibration": "b"})  # other tiles: measured
    assert builds[0] == 2
    refusal.write_text("--precision int8: refus", encoding="utf-8")
    with (
        pytest.warns(GeosegWarning, match="cached refusal .* is damaged") as caught,
        pytest.raises(AgreementError),
    ):
        get({"calibration": "a"})
    assert (len(caught), builds[0], refusal.read_text(encoding="utf-8")) == (
        1,
        3,
        "--precision int8: refused",
    )


def test_a_build_error_not_to_remember_is_tried_again(tmp_path):
    builds = [0]

    def failing(path: Path) -> None:
        builds[0] += 1
        raise ConfigurationError("onnx is not installed")

    for _ in range(2):
        with pytest.raises(ConfigurationError):
            cached_file("net-int8", {"model": "a"}, failing, folder=tmp_path, remember=AgreementError)
    assert builds[0] == 2 and list(tmp_path.glob("*.refused")) == []


def test_an_unwritable_cache_builds_in_a_temporary_folder_with_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # geoseg/ cannot be made under a file
    builds = [0]
    with pytest.warns(GeosegWarning, match="cannot write the export cache") as caught:
        made = cached_file("net", {"model": "a"}, _builder(builds))
    assert (len(caught), builds[0], made.path.read_bytes()) == (1, 1, b"graph")
    assert not made.path.is_relative_to(blocker)


# --- the engine choice and refusals ---------------------------------------------------------------------


def test_auto_runs_geoseg_networks_in_onnxruntime_on_the_cpu_only(pretend_cpu):
    pretend_cpu(native_bf16=True)
    manet = build_manet(6, "resnet18")
    assert resolve_engine("auto", "auto", CPU, manet) == "onnxruntime"
    assert resolve_engine("auto", "fp32", CPU, manet) == "onnxruntime"
    assert resolve_engine("auto", "bf16", CPU, manet) == "torch"  # asked for torch's bf16
    assert resolve_engine("auto", "auto", CPU, manet, compile=True) == "torch"
    assert resolve_engine("auto", "auto", torch.device("cuda"), manet) == "torch"
    assert resolve_engine("auto", "auto", CPU, PixelNet()) == "torch"  # not one the exporter knows
    assert resolve_engine("auto", "int8", CPU, manet) == "onnxruntime"


def test_auto_is_torch_without_onnxruntime(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    assert resolve_engine("auto", "auto", CPU, build_manet(6, "resnet18")) == "torch"


def _without_onnxruntime(monkeypatch):
    real = geoseg.export.metadata.importlib.import_module

    def refuse(name, *args):
        if name.startswith("onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(geoseg.export.metadata.importlib, "import_module", refuse)


def test_engine_onnxruntime_without_onnxruntime_fails_in_one_line(checkpoint, crop, tmp_path, monkeypatch):
    _without_onnxruntime(monkeypatch)
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(checkpoint), "--device", "cpu",
                      "--engine", "onnxruntime")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: onnxruntime is not installed; ONNX support is an extra: pip install 'geoseg[onnx]'"
    ]
    assert not (tmp_path / "c.tif").exists()


def test_int8_with_engine_torch_fails_in_one_line(checkpoint, crop, tmp_path):
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(checkpoint), "--device", "cpu",
                      "--precision", "int8", "--engine", "torch")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --precision int8 runs in onnxruntime; "
        "use --engine onnxruntime or --engine auto (or another precision)"
    ]


def test_int8_on_a_gpu_is_refused():
    with pytest.raises(
        ConfigurationError, match=r"^precision='int8' runs on the CPU \(onnxruntime\), not on cuda"
    ):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigurationError, match="'int8' runs in onnxruntime"):
        resolve_engine("torch", "int8", CPU, build_manet(6, "resnet18"))


# --- runs, and what they report --------------------------------------------------------------------------


@pytest.mark.slow
def test_onnxruntime_keeps_torch_float32_classes_and_exports_once(checkpoint, crop, tmp_path, exports):
    torch_out, ort_out, again = tmp_path / "torch.tif", tmp_path / "ort.tif", tmp_path / "again.tif"
    common = ["-m", str(checkpoint), "--device", "cpu"]
    first = _predict(str(crop), "-o", str(torch_out), *common, "--engine", "torch", "--precision", "fp32")
    second = _predict(str(crop), "-o", str(ort_out), *common, "--engine", "onnxruntime")
    assert exports[0] == 1
    third = _predict(str(crop), "-o", str(again), *common)  # auto: onnxruntime, from the cache
    assert (first.exit_code, second.exit_code, third.exit_code) == (0, 0, 0), second.output
    assert exports[0] == 1
    records = [json.loads(r.stdout) for r in (first, second, third)]
    assert [(r["engine"], r["precision"]) for r in records] == [
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "fp32"),
    ]
    reference = _classes(torch_out)
    assert np.mean(_classes(ort_out) == reference) >= 0.9999
    assert np.array_equal(_classes(again), _classes(ort_out))


@pytest.mark.slow
def test_an_onnx_model_reports_float32_on_a_native_bf16_cpu(checkpoint, crop, tmp_path, pretend_cpu):
    """Before: ``-m model.onnx`` said "bf16" where the CPU has native bf16, though onnxruntime ran float32."""
    pretend_cpu(native_bf16=True)
    onnx_path = tmp_path / "net.onnx"
    exported = CliRunner().invoke(cli, ["export", str(checkpoint), "-o", str(onnx_path)])
    assert exported.exit_code == 0, exported.output
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(onnx_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["precision"], record["engine"]) == ("fp32", "onnxruntime")
    assert "float32_layers" not in record


def test_int8_below_the_agreement_is_refused_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 1))
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "f.onnx"), dynamo=False,
                      input_names=["pixels"])  # fmt: skip
    tiles = [np.random.default_rng(i).uniform(-2, 2, (1, 3, 32, 32)).astype(np.float32) for i in range(2)]
    with pytest.raises(ConfigurationError, match="keeps the classes of .* of the calibration pixels only"):
        quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", tiles, min_agreement=1.01)
    assert not (tmp_path / "q.onnx").exists()


# --- int8 ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_network():
    """A two-convolution network with LoveDA's card at 64 px tiles: int8's mechanics in seconds."""
    from geoseg.model.presets import preset_card

    card = ModelCard.from_dict({**preset_card("loveda").to_dict(), "tile_size": 64, "overlap": 16})
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 7, 1))
    return net.eval(), card


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_network):
    """:func:`tiny_network` exported as geoseg exports checkpoints (dynamic batch, raw pixels in, logits
    out), with its card."""
    from geoseg.export.exporter import export_program, write_onnx

    net, card = tiny_network
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    write_onnx(export_program(net, card, logits=True), card, {OUTPUT_KIND_KEY: "logits"}, path)
    return path, card


def test_an_int8_model_keeps_the_dynamic_batch(tiny_export, tmp_path):
    """A scene's last batch is short (7 tiles after batches of 8): the int8 graph takes any batch."""
    path, _ = tiny_export
    tiles = [np.random.default_rng(i).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32) for i in range(8)]
    quantize_int8(path, tmp_path / "q.onnx", tiles, min_agreement=0.0)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[:1]] == [0]  # symbolic
    session = onnxruntime.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    for count in (1, 7, 8):
        batch = np.random.default_rng(count).uniform(0, 255, (count, 3, 64, 64)).astype(np.float32)
        assert session.run(None, {"pixels": batch})[0].shape == (count, 7, 64, 64)


def test_calibration_tiles_are_whole_tiles_mirrored_at_the_scene_edge(tiny_export, tmp_path):
    """Before: the grid's first tile starts at -margin (-8 here) and was read cut to 56 px, which MANet
    cannot take (its int8 calibration failed on "broadcast ... 7 by 8"); the engine reads it whole,
    mirrored about the scene's edge."""
    path, card = tiny_export
    values = write_scene(tmp_path / "s.tif", width=150, height=100)
    plan = plan_scene(card, tmp_path / "s.tif")
    assert (plan.grid.ys[0], plan.grid.xs[0]) == (-8, -8)
    network, _ = load_onnx(path, card=card)
    tiles = calibration_tiles([plan], network)
    assert [t.shape for t in tiles] == [(1, 3, 64, 64)] * len(tiles) and len(tiles) == 8
    first = tiles[0][0]  # the tile at (-8, -8): row/column 8 is the scene's first, 7 its second (mirror)
    assert np.array_equal(first[:, 8, 8:], values[:, 0, :56].astype(np.float32))
    assert np.array_equal(first[:, 7, 8:], values[:, 1, :56].astype(np.float32))
    assert np.array_equal(first[:, 8:, 7], values[:, :56, 1].astype(np.float32))


def test_a_refused_int8_calibration_is_remembered_for_its_tiles(tiny_network, tmp_path, monkeypatch):
    """Before: a run refused for agreement calibrated and measured again from scratch (minutes on MANet-R50)
    the next time; now the same model and tiles refuse at once with the same line, other tiles are tried."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(geoseg.export.quantize, "MIN_AGREEMENT", 1.01)  # above any agreement: refused
    calls = count_calls(monkeypatch, geoseg.export.quantize, "quantize_int8")
    net, card = tiny_network
    tiles = [np.random.default_rng(i).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32) for i in range(3)]

    def refusal(chosen: list[np.ndarray]) -> str:
        with pytest.raises(AgreementError) as caught:
            onnx_network(net, card, "digest-a", int8=True, calibration=lambda _float: chosen)
        return str(caught.value)

    first = refusal(tiles)
    assert first.startswith("precision='int8': the int8 network keeps the classes of ") and calls[0] == 1
    assert refusal(tiles) == first and calls[0] == 1
    refusal(tiles[:2])  # another calibration set: measured
    assert calls[0] == 2
    assert [p.name for p in (tmp_path / "cache" / "geoseg").glob("*int8*.onnx")] == []


def test_int8_calibrates_once_on_tiles_spread_over_all_the_scenes(tiny_network, tmp_path, monkeypatch):
    """Before: a batch with ``--precision int8`` and no ``--calibration`` calibrated on the first scene only.
    A dark scene and a bright one: the calibration tiles come from both, quantized once for the batch."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calibrations = []
    original = geoseg.export.quantize.quantize_int8

    def recording(float_path, output, tiles, **kwargs):
        calibrations.append(tiles)
        return original(float_path, output, tiles, **{**kwargs, "min_agreement": 0.0})

    monkeypatch.setattr(geoseg.export.quantize, "quantize_int8", recording)
    rng = np.random.default_rng(0)
    dark, bright = tmp_path / "dark.tif", tmp_path / "bright.tif"
    write_geotiff(dark, rng.integers(0, 100, (3, 100, 150)).astype(np.uint8))
    write_geotiff(bright, rng.integers(156, 256, (3, 100, 150)).astype(np.uint8))
    net, card = tiny_network
    results = predict([dark, bright], tmp_path / "out", model=net, card=card, device="cpu", precision="int8")
    assert [(r.engine, r.precision) for r in results] == [("onnxruntime", "int8")] * 2
    (tiles,) = calibrations
    assert len(tiles) == 8
    assert {"dark" if t.max() < 100 else "bright" if t.min() >= 156 else "both" for t in tiles} == {
        "dark",
        "bright",
    }


def test_onnxruntime_threads_follow_torchs_when_the_network_runs(tiny_export):
    """A Dask worker sets torch's threads to its share of the cores before each region. Before: the
    session opened at load kept the thread count of that moment (onnxruntime's own default is one per
    physical core), and the workers of one machine oversubscribed its cores."""
    path, card = tiny_export
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        network, _ = load_onnx(path, card=card)
        torch.set_num_threads(1)  # a worker's share
        network(network.prepare_input(torch.zeros(1, 3, 64, 64), (0, 255)))
        assert network._session(CPU).get_session_options().intra_op_num_threads == 1
        assert len(network._sessions) == 1  # replaced, not one more session
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def decisive_checkpoint(tmp_path_factory):
    """The small MANet with its last convolution's bias giving class 3 a margin of 1000 over the others:
    its int8 version keeps every class, on any CPU."""
    from geoseg.model.checkpoint import load_checkpoint, save_checkpoint

    network, card = load_checkpoint(write_small_checkpoint(tmp_path_factory.mktemp("m") / "a.safetensors"))
    with torch.no_grad():
        network.finalconv3.bias.zero_()
        network.finalconv3.bias[3] = 1000.0
    return save_checkpoint(network, card, tmp_path_factory.mktemp("m") / "decisive.safetensors")


@pytest.mark.slow
def test_int8_reports_the_layers_kept_in_float32(decisive_checkpoint, crop, tmp_path):
    model = ["-m", str(decisive_checkpoint), "--device", "cpu"]
    fp32 = _predict(
        str(crop), "-o", str(tmp_path / "f.tif"), *model, "--engine", "torch", "--precision", "fp32"
    )
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), *model, "--precision", "int8",
                      "--calibration", SCENE)  # fmt: skip
    assert (fp32.exit_code, result.exit_code) == (0, 0), result.output
    record = json.loads(result.stdout)
    assert (record["precision"], record["engine"], record["float32_layers"]) == ("int8", "onnxruntime", [])
    assert np.array_equal(_classes(tmp_path / "c.tif"), _classes(tmp_path / "f.tif"))
    assert set(np.unique(_classes(tmp_path / "f.tif"))) <= {3, 255}


@pytest.mark.slow
def test_int8_under_the_agreement_is_refused_in_one_line(decisive_checkpoint, crop, tmp_path, monkeypatch):
    """The measured agreement forced under the threshold (the threshold above any agreement): one line,
    no output, no int8 model left in the cache; the rerun says the same line without measuring again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(geoseg.export.quantize, "MIN_AGREEMENT", 1.01)
    calls = count_calls(monkeypatch, geoseg.export.quantize, "quantize_int8")
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(decisive_checkpoint),
                      "--device", "cpu", "--precision", "int8")  # fmt: skip
    again = _predict(str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(decisive_checkpoint),
                     "--device", "cpu", "--precision", "int8")  # fmt: skip
    assert (result.exit_code, again.exit_code, calls[0]) == (1, 1, 1)
    assert again.stderr == result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: --precision int8: the int8 network keeps the classes of 100.00% of the calibration pixels "
        "only (at least 101.0% needed, 0 of 8 layer groups in float32); use --precision fp32 or --precision "
        "auto, or other tiles (--calibration RASTERS)"
    ]
    assert not (tmp_path / "c.tif").exists()
    assert [p.name for p in (tmp_path / "cache" / "geoseg").glob("*int8*.onnx")] == []


def test_onnxruntime_at_half_precision_suggests_only_the_precisions_the_command_runs(
    checkpoint, crop, tmp_path, pretend_cpu
):
    pretend_cpu(native_bf16=True)  # a bf16 the device runs, so the engine is what refuses
    common = ["-m", str(checkpoint), "--device", "cpu", "--engine", "onnxruntime", "--precision", "bf16"]
    result = _predict(str(crop), "-o", str(tmp_path / "c.tif"), *common)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --engine onnxruntime runs float32 or int8, not bf16; "
        "use --precision fp32, --precision int8 or --precision auto\n"
    )
    result = CliRunner().invoke(
        cli, ["serve", str(crop), "-o", str(tmp_path / "s.tif"), "--port", "0", *common]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --engine onnxruntime runs float32, not bf16; use --precision fp32 or --precision auto\n"
    )


def test_calibration_without_int8_is_refused_not_ignored(checkpoint, crop, tmp_path):
    from geoseg.inference.options import PredictOptions

    with pytest.raises(ConfigurationError) as refused:
        PredictOptions(precision="fp32", calibration=["tiles"])
    assert (
        str(refused.value)
        == "calibration='tiles' is for precision='int8' only; drop it or pass precision='int8'"
    )
    result = _predict(
        str(crop), "-o", str(tmp_path / "c.tif"), "-m", str(checkpoint), "--calibration", str(crop)
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: --calibration {crop} is for --precision int8 only; drop it or pass --precision int8\n"
    )
    assert not (tmp_path / "c.tif").exists()
