"""CPU speed of the default configuration, and whether it keeps the classes.

Side by side in one process, alternating, on the same tiles of a real scene with the bundled model (or
``--model``):

- **bare fp32 eager**: the network's forward passes alone, float32, contiguous layout, no compile;
- **bare default**: the same forward passes in the configuration ``--precision auto`` picks here (bf16 on
  CPUs with native bf16, channels_last on AVX512, ``--compile`` if given);
- **end to end**: ``geoseg predict`` at ``--precision auto`` (reading, blending, writing, COG; model load,
  compilation and warm-up included).

Prints end-to-end ÷ bare fp32 eager (issue 9 target: >= 2.0 where the CPU has native bf16, never < 1.6),
end-to-end ÷ bare default (target >= 0.90), and the class agreement of the default with
``--precision fp32`` over the scene's valid pixels (target >= 99.5 %), for the bundled model and for a
trained foreign checkpoint: the bundled network written as the MANet authors' GeoSeg training saves it
(Lightning ``.ckpt``, timm key names, ÷255 input with the mean/std folded into the first convolution) and
converted back as ``geoseg convert --card`` does (skipped with ``--model``). ``--force-bf16`` runs the bf16
path on a CPU without native bf16 (emulated by oneDNN, ~30x slower than float32 for MANet-R50: its times
mean nothing there, its agreement does); ``--emulate-native-bf16`` also computes the bf16 convolutions as a
CPU with native bf16 does, through float32 kernels (tests/helpers.py), so whole scenes take minutes, and
prints agreement only. ``--compile`` also prints the compile time and the break-even in tiles.

    .venv/bin/python benchmarks/cpu_speed.py
    .venv/bin/python benchmarks/cpu_speed.py --scene /work/shared/data/aerial/brazil_oam_0p10m_epsg3395.tif
    .venv/bin/python benchmarks/cpu_speed.py --force-bf16 --repeats 1
    .venv/bin/python benchmarks/cpu_speed.py --emulate-native-bf16 --scene sample_data/*.tif \
        --scene ../shared/data/labeled/vaihingen/image_area1_0_0_512_512_irrg.png
    .venv/bin/python benchmarks/cpu_speed.py --compile --repeats 1
    .venv/bin/python benchmarks/cpu_speed.py --engines --threads 1 --repeats 1

``--engines`` prints instead, side by side on the same tiles, bare and end-to-end figures for torch fp32
eager, torch bf16 (where the CPU has it natively), onnxruntime fp32 and onnxruntime int8 (calibrated on the
scene, as ``--precision int8`` does; its export and calibration come from the cache, made before the
clock), each as a ratio to torch fp32 eager (end to end over end to end, and end to end over the bare
forward passes), with the classes' agreement with torch fp32 end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

import geoseg.device
from geoseg.device import autocast_dtype, resolve_precision
from geoseg.errors import ConfigurationError
from geoseg.inference.acceleration import accelerate, channels_last_pays
from geoseg.inference.batch import predict
from geoseg.inference.plan import plan_scene
from geoseg.model.checkpoint import convert_checkpoint, default_checkpoint_path, load_checkpoint
from geoseg.model.loading import load_model
from geoseg.model.normalize import normalize
from geoseg.model.presets import preset_card
from geoseg.raster.reading import open_raster, read_mirrored

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the authors' checkpoint format and the bf16 kernels of the tests
from helpers import NativeBf16Convolutions, write_authors_checkpoint  # noqa: E402

SAMPLE = ROOT / "sample_data" / "netherlands_0p25m_epsg28992.tif"
CPU = torch.device("cpu")


def scene_tiles(path: Path, card) -> tuple[torch.Tensor, tuple[float, float]]:
    """Every tile of the scene's grid (uint8, N×C×T×T) and its value range: what predict computes, border
    context included (the grid starts at -margin; tiles reaching past the edge are mirrored, as the engine
    reads them), so bare and end-to-end seconds per tile divide the same work."""
    plan = plan_scene(card, path)
    grid = plan.grid
    with open_raster(path) as dataset:
        tiles = [
            read_mirrored(dataset, y, x, grid.tile, grid.tile, plan.bands) for y in grid.ys for x in grid.xs
        ]
    return torch.from_numpy(np.stack(tiles)), plan.value_range


def bare_seconds(
    network, tiles: torch.Tensor, value_range, card, amp: torch.dtype | None, batch: int
) -> float:
    """Forward passes alone over ``tiles`` in batches (normalised first, outside the clock)."""
    x = normalize(tiles, value_range, card.mean, card.std)
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            network(x[i : i + batch])
        return time.perf_counter() - start


def end_to_end(scene: Path, model: Path, out: Path, precision: str, batch: int, compile: bool) -> float:
    start = time.perf_counter()
    predict([scene], out, model=model, device="cpu", precision=precision, compile=compile,
            batch_size=batch, overwrite=True)  # fmt: skip
    return time.perf_counter() - start


def agreement(a: Path, b: Path) -> float:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        ca, cb = x.read(1), y.read(1)
    valid = (ca != 255) & (cb != 255)
    return float((ca[valid] == cb[valid]).mean())


def converted_bundled_model(folder: Path) -> Path:
    """The bundled model as the authors' GeoSeg ``.ckpt`` (÷255 input), converted back with a ÷255 card."""
    model, card = load_checkpoint(default_checkpoint_path())
    source = write_authors_checkpoint(model, card, folder / "manet_loveda.ckpt")
    card_file = folder / "loveda_div255.json"
    card_file.write_text(json.dumps({**preset_card("loveda").to_dict(), "mean": [0.0] * 3, "std": [1.0] * 3}))
    output = folder / "converted.safetensors"
    convert_checkpoint(source, output, card=card_file, overwrite=True)
    source.unlink()
    return output


def default_agreement(scene: Path, model: Path, default: Path, tmp: Path, batch: int) -> float:
    """Class agreement of ``default`` (written at ``--precision auto``) with ``--precision fp32``."""
    reference = tmp / "fp32.tif"
    end_to_end(scene, model, reference, "fp32", batch, False)
    return agreement(default, reference)


def bf16_kernels(emulate: bool) -> contextlib.AbstractContextManager:
    return NativeBf16Convolutions() if emulate else contextlib.nullcontext()


def compile_break_even(model, tiles, value_range, card, amp, batch: int) -> None:
    """Compile time (first batch minus a steady one) and the tiles after which compiling has paid."""
    eager = accelerate(model, CPU)
    compiled = accelerate(model, CPU, compile=True)
    x = tiles[:batch]
    first = bare_seconds(compiled, x, value_range, card, amp, batch)
    steady = min(bare_seconds(compiled, x, value_range, card, amp, batch) for _ in range(2))
    plain = min(bare_seconds(eager, x, value_range, card, amp, batch) for _ in range(2))
    saving = (plain - steady) / batch
    print(f"compile: first batch {first:.1f} s (compile ~{first - steady:.1f} s)")
    print(f"compile: {steady / batch:.2f} s/tile compiled, {plain / batch:.2f} s/tile eager")
    if saving > 0:
        print(f"compile break-even: {(first - steady) / saving:.0f} tiles")
    else:
        print("compile break-even: never (compiled tiles are not faster here)")


def engines_table(scene: Path, model: Path, batch: int, repeats: int, with_int8: bool = True) -> None:
    """Bare and end-to-end seconds per tile and agreement for each engine and precision, side by side."""
    from geoseg.export.cpu_engine import calibration_tiles, onnx_network, resolve_engine
    from geoseg.model.loading import model_digest

    network, card = load_model(model, None, None)
    network.eval()
    tiles, value_range = scene_tiles(scene, card)
    plan = plan_scene(card, scene)
    digest = model_digest(network)
    fp32 = onnx_network(network, card, digest)
    int8, kept = None, "int8 not measured (--skip-int8)"
    try:
        if with_int8:
            int8 = onnx_network(
                network, card, digest, int8=True, calibration=lambda n: calibration_tiles([plan], n)
            )
            kept = (f"int8 keeps in float32: {', '.join(int8.network.float32_layers) or 'nothing'} "
                    f"(export and calibration: {int8.seconds:.0f} s, 0 when cached)")  # fmt: skip
    except ConfigurationError as refusal:  # the scene's classes do not hold in int8: a figure too
        kept = f"int8 refused here: {refusal}"
    rows = {"torch fp32 eager": (network, None, "torch", "fp32")}
    if geoseg.device.cpu_features().native_bf16:
        rows["torch bf16 (default before)"] = (accelerate(network, CPU), torch.bfloat16, "torch", "bf16")
    rows["onnxruntime fp32"] = (fp32.network, None, "onnxruntime", "fp32")
    if int8 is not None:
        rows["onnxruntime int8"] = (int8.network, None, "onnxruntime", "int8")
    print(f"\n{scene.name}: {len(tiles)} tiles of {tiles.shape[-1]} px, batch {batch}; {kept}")
    default = resolve_engine("auto", "auto", CPU, network)
    amp = autocast_dtype("auto", CPU) if default == "torch" else None
    print(f"  the default here (--engine auto --precision auto): {default} "
          f"{'fp32' if amp is None else str(amp).removeprefix('torch.')}")  # fmt: skip
    bare: dict[str, list[float]] = {name: [] for name in rows}
    e2e: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {name: Path(tmp) / f"{i}.tif" for i, name in enumerate(rows)}
        for net, amp, _, _ in rows.values():  # warm-up
            _bare(net, tiles[:batch], value_range, card, amp, batch)
        for _ in range(repeats):
            for name, (net, amp, engine, precision) in rows.items():
                bare[name].append(_bare(net, tiles, value_range, card, amp, batch))
                start = time.perf_counter()
                predict([scene], outputs[name], model=model, device="cpu", precision=precision, engine=engine,
                        batch_size=batch, overwrite=True)  # fmt: skip
                e2e[name].append(time.perf_counter() - start)
        base_bare, base_e2e = (
            statistics.median(bare["torch fp32 eager"]),
            statistics.median(e2e["torch fp32 eager"]),
        )
        print(f"  {'':28s} {'bare s/tile':>11s} {'÷ fp32':>7s} {'e2e s/tile':>11s} {'÷ fp32 e2e':>10s} "
              f"{'÷ fp32 bare':>11s} {'classes = torch fp32':>21s}")  # fmt: skip
        for name in rows:
            b, e = statistics.median(bare[name]), statistics.median(e2e[name])
            share = agreement(outputs[name], outputs["torch fp32 eager"]) * 100
            print(f"  {name:28s} {b / len(tiles):11.2f} {base_bare / b:6.2f}× {e / len(tiles):11.2f} "
                  f"{base_e2e / e:9.2f}× {base_bare / e:10.2f}× {share:20.4f} %")  # fmt: skip


def _bare(network, tiles: torch.Tensor, value_range, card, amp, batch: int) -> float:
    """Forward passes alone; an onnxruntime network takes raw values (its graph normalises)."""
    prepare = getattr(network, "prepare_input", None)
    if prepare is None:
        return bare_seconds(network, tiles, value_range, card, amp, batch)
    x = prepare(tiles, value_range)
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        network(x[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scene", type=Path, action="append", help="real scene(s); default: the sample")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of the three timings")
    parser.add_argument("--compile", action="store_true", help="default configuration with torch.compile")
    parser.add_argument(
        "--force-bf16", action="store_true", help="bf16 and channels_last as on a CPU with native bf16"
    )
    parser.add_argument("--agreement-only", action="store_true", help="skip the timings")
    parser.add_argument(
        "--engines", action="store_true", help="torch fp32/bf16 and onnxruntime fp32/int8 side by side"
    )
    parser.add_argument(
        "--skip-int8", action="store_true", help="--engines without int8 (its calibration takes minutes)"
    )
    parser.add_argument(
        "--emulate-native-bf16",
        action="store_true",
        help="--force-bf16 with bf16 convolutions computed as native bf16 does, fast; agreement only",
    )
    args = parser.parse_args()
    if args.emulate_native_bf16:
        args.force_bf16 = args.agreement_only = True
    if args.threads:
        torch.set_num_threads(args.threads)
    capability, native = torch.backends.cpu.get_cpu_capability(), geoseg.device.cpu_features().native_bf16
    if args.force_bf16:  # CPUs with native bf16 all have AVX512 too, where channels_last pays
        forced_cpu = geoseg.device.CpuFeatures(avx512=True, native_bf16=True, native_fp16=False)
        geoseg.device.cpu_features = lambda: forced_cpu
    model_path = args.model or default_checkpoint_path()
    precision = resolve_precision("auto", CPU)
    amp = autocast_dtype("auto", CPU)
    forced = "; bf16 and channels_last forced" if args.force_bf16 else ""
    print(f"CPU: torch {torch.__version__}, capability {capability}, {torch.get_num_threads()} threads; "
          f"native bf16: {native}{forced}")  # fmt: skip
    if args.engines:
        for scene in args.scene or [SAMPLE]:
            engines_table(scene, model_path, args.batch_size, args.repeats, not args.skip_int8)
        return
    layout = "channels_last" if channels_last_pays(CPU) else "contiguous"
    print(f"default here: precision {precision}, {layout}, compile {args.compile}")

    folder = tempfile.TemporaryDirectory()
    converted = None if args.model else converted_bundled_model(Path(folder.name))
    for scene in args.scene or [SAMPLE]:
        eager, card = load_model(model_path, None, None)
        eager.eval()
        default = accelerate(load_model(model_path, None, None)[0].eval(), CPU, compile=args.compile)
        tiles, value_range = scene_tiles(scene, card)
        print(f"\n{scene.name}: {len(tiles)} tiles of {tiles.shape[-1]} px, batch {args.batch_size}")
        times: dict[str, list[float]] = {"bare fp32 eager": [], "bare default": [], "end to end": []}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "default.tif"
            if args.agreement_only:
                with bf16_kernels(args.emulate_native_bf16):
                    end_to_end(scene, model_path, out, "auto", args.batch_size, args.compile)
            else:  # warm-up of both networks first
                bare_seconds(eager, tiles[: args.batch_size], value_range, card, None, args.batch_size)
                bare_seconds(default, tiles[: args.batch_size], value_range, card, amp, args.batch_size)
            for _ in range(0 if args.agreement_only else args.repeats):
                times["bare fp32 eager"].append(
                    bare_seconds(eager, tiles, value_range, card, None, args.batch_size)
                )
                times["bare default"].append(
                    bare_seconds(default, tiles, value_range, card, amp, args.batch_size)
                )
                times["end to end"].append(
                    end_to_end(scene, model_path, out, "auto", args.batch_size, args.compile)
                )
            for name, values in times.items() if not args.agreement_only else ():
                print(f"  {name:16s} {statistics.median(values) / len(tiles):6.2f} s/tile  "
                      f"({', '.join(f'{v:.1f}' for v in values)} s)")  # fmt: skip
            if not args.agreement_only:
                e2e, median = statistics.median(times["end to end"]), statistics.median
                print(
                    f"  end to end / bare fp32 eager (speed-up): {median(times['bare fp32 eager']) / e2e:.2f}"
                )
                print(f"  end to end / bare default (plumbing):    {median(times['bare default']) / e2e:.2f}")
            share = default_agreement(scene, model_path, out, Path(tmp), args.batch_size) * 100
            print(f"  classes agree with --precision fp32 on {share:.2f} % of valid pixels")
            if converted is not None:
                with bf16_kernels(args.emulate_native_bf16):
                    end_to_end(scene, converted, out, "auto", args.batch_size, args.compile)
                share = default_agreement(scene, converted, out, Path(tmp), args.batch_size) * 100
                print(f"  converted GeoSeg .ckpt: classes agree with --precision fp32 on {share:.2f} %")
        if args.compile:
            compile_break_even(load_model(model_path, None, None)[0].eval(), tiles, value_range, card, amp,
                               args.batch_size)  # fmt: skip
    folder.cleanup()


if __name__ == "__main__":
    main()
