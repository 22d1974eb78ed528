"""Does folding BatchNorm into convolutions pay? The network's forward passes with and without the fold,
side by side in one process, alternating, at each tile size; and what the fold itself costs once.

Prints, per tile size, the median seconds per batch of the plain and the folded network and their ratio
(plain ÷ folded: above 1 the fold pays), by the wall clock and by CPU time (on a shared machine, with
``--threads 1``, CPU time is the steadier), and the largest logit difference relative to the logits' range.
Float32 and the contiguous layout unless asked (``--bf16`` autocast, ``--channels-last``); random inputs
(speed does not depend on the pixels; ``tests/inference/test_acceleration.py`` checks the classes on real
tiles).

    .venv/bin/python benchmarks/conv_bn_folding.py
    .venv/bin/python benchmarks/conv_bn_folding.py --architecture macunet --sizes 256 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from geoseg.inference.acceleration import fold_batchnorm
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint
from geoseg.model.macunet import build_macunet
from geoseg.model.maresunet import build_maresunet

BUILDERS = {
    "manet": lambda: load_checkpoint(default_checkpoint_path())[0],  # the bundled MANet-R50
    "maresunet": lambda: build_maresunet(6),
    "macunet": lambda: build_macunet(6),
}


def seconds(network: nn.Module, x: torch.Tensor, amp, memory_format) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one forward pass: on a machine shared with other work, CPU time leaves
    out the time the process waited for a core (with one thread it is the steadier measure)."""
    x = x.contiguous(memory_format=memory_format)
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        wall, cpu = time.perf_counter(), time.process_time()
        network(x)
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", choices=sorted(BUILDERS), default="manet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternating plain/folded rounds per size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (emulated without native bf16)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    amp = torch.bfloat16 if args.bf16 else None

    plain = BUILDERS[args.architecture]().eval()
    start = time.perf_counter()
    folded = fold_batchnorm(plain)
    fold_s = time.perf_counter() - start
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    plain, folded = plain.to(memory_format=memory_format), folded.to(memory_format=memory_format)
    print(f"{args.architecture}: torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, {'bf16' if amp else 'fp32'}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, batch {args.batch_size}")  # fmt: skip
    print(f"fold: {norms - left} of {norms} BatchNorms folded in {fold_s:.2f} s (once per process)")

    g = torch.Generator().manual_seed(0)
    for size in args.sizes:
        channels = next(m for m in plain.modules() if isinstance(m, nn.Conv2d)).in_channels
        x = torch.randn(args.batch_size, channels, size, size, generator=g)
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            a, b = plain(x).float(), folded(x).float()  # also the warm-up of both
        difference = ((a - b).abs().max() / (a.max() - a.min())).item()
        runs: dict[str, list[tuple[float, float]]] = {"plain": [], "folded": []}
        for _ in range(args.rounds):
            runs["plain"].append(seconds(plain, x, amp, memory_format))
            runs["folded"].append(seconds(folded, x, amp, memory_format))
        print(
            f"{size}²: max logit difference {difference:.1e} of the range; medians of {args.rounds} rounds:"
        )
        for clock, which in (("wall", 0), ("CPU", 1)):
            p = statistics.median(r[which] for r in runs["plain"])
            f = statistics.median(r[which] for r in runs["folded"])
            # each round's two runs are neighbours in time: their ratio is the least disturbed by other load
            paired = statistics.median(u[which] / v[which] for u, v in zip(*runs.values(), strict=True))
            print(f"  {clock:4s} plain {p:.3f} s, folded {f:.3f} s per batch; plain ÷ folded {p / f:.3f} "
                  f"(median of the rounds' ratios {paired:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
