"""MANet, MACU-Net and MAResU-Net side by side: forward tiles per second on the same tiles, in float32 and in
the default precision (``--precision auto``: bf16/fp16 on GPUs, bf16 on CPUs with native bf16, else fp32),
and the peak memory one tile's forward pass adds.

Each (network, precision) runs in a fresh subprocess, one after the other, so that its peak memory is its
own: on CUDA the allocator's peak above the loaded weights, on the CPU the growth of the peak resident set
(``ru_maxrss``) during the first forward pass of one tile. Speeds are also given relative to MANet.

    .venv/bin/python benchmarks/architectures.py                  # 512 px tiles, 4 timed tiles each
    .venv/bin/python benchmarks/architectures.py --device cuda --tiles 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

ARCHITECTURES = ("manet", "macunet", "maresunet")


def measure(architecture: str, precision: str, args: argparse.Namespace) -> dict:
    """Run in the child: build the network, one tile for memory, then the timed tiles."""
    import torch

    from geoseg.device import autocast_dtype, resolve_device
    from geoseg.model.build import build_model
    from geoseg.model.normalize import normalize
    from geoseg.model.presets import preset_card

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = autocast_dtype(precision, device)
    card = preset_card("potsdam", None, architecture=architecture)
    torch.manual_seed(0)
    model = build_model(architecture, card.num_classes).eval().to(device)
    parameters = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)  # the same tiles for every network
    raw = torch.randint(0, 256, (args.tiles, 3, args.tile, args.tile), dtype=torch.uint8, generator=generator)
    tiles = normalize(raw.to(device), card.value_range, card.mean, card.std)

    def forward(x: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            forward(tiles[:1])
            peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            forward(tiles[:1])
            peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        forward(tiles[: args.batch_size])  # warm-up at the timed batch size
        start = time.perf_counter()
        for first in range(0, args.tiles, args.batch_size):
            forward(tiles[first : first + args.batch_size])
        seconds = time.perf_counter() - start
    return {
        "architecture": architecture,
        "precision": "fp32" if amp is None else str(amp).replace("torch.", ""),
        "parameters": parameters,
        "tiles_per_s": args.tiles / seconds,
        "peak_mb_per_tile": peak_mb,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--tiles", type=int, default=4, help="timed tiles per network and precision")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=2, metavar=("ARCHITECTURE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args)))
        return

    forwarded = [
        f"--tile={args.tile}", f"--tiles={args.tiles}", f"--batch-size={args.batch_size}",
        f"--device={args.device}", *([f"--threads={args.threads}"] if args.threads else []),
    ]  # fmt: skip
    from geoseg.device import resolve_device, resolve_precision  # imports torch: the default precision here

    default = resolve_precision("auto", resolve_device(args.device))
    rows = []
    for precision in ("fp32",) if default == "fp32" else ("fp32", "auto"):
        for architecture in ARCHITECTURES:
            child = [sys.executable, __file__, *forwarded, "--child", architecture, precision]
            done = subprocess.run(child, check=True, capture_output=True, text=True)
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "requested": precision})
    first = rows[0]
    print(
        f"{args.tiles} tiles of {args.tile}² px, batch {args.batch_size}, {first['device']}, "
        f"{first['threads']} torch threads (same random tiles for every network); default precision here: "
        f"{default}{' (the fp32 rows)' if default == 'fp32' else ''}"
    )
    print(
        f"{'network':<10} {'parameters':>11} {'precision':>13} {'tiles/s':>8} {'vs MANet':>9} "
        f"{'peak MB/tile':>13}"
    )
    manet = {row["requested"]: row["tiles_per_s"] for row in rows if row["architecture"] == "manet"}
    for row in rows:
        label = row["precision"] if row["requested"] == "fp32" else f"auto={row['precision']}"
        print(
            f"{row['architecture']:<10} {row['parameters']:>11,} {label:>13} {row['tiles_per_s']:>8.3f} "
            f"{row['tiles_per_s'] / manet[row['requested']]:>8.2f}x {row['peak_mb_per_tile']:>13.0f}"
        )


if __name__ == "__main__":
    main()
