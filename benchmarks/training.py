"""Training throughput of MANet (crops per second) for the small and the paper's backbone on this machine.

Each measured step is what ``geoseg train`` does per batch: normalise a uint8 batch on the device, forward
(under the chosen mixed precision), soft cross-entropy + Dice, backward, AdamW step with the encoder at a
tenth of the learning rate. Batches are random uint8 images and labels drawn once (data loading is not
measured). Warm-up steps are excluded from the timing.

    python benchmarks/training.py [--crop 256] [--batch-size 4] [--steps 3] [--warmup 1]
                                  [--backbones resnet18,resnet50] [--device auto] [--precision auto]
                                  [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from geoseg.device import autocast_dtype, resolve_device
from geoseg.model.manet import build_manet
from geoseg.model.normalize import normalize
from geoseg.model.presets import preset_card
from geoseg.training.loop import TrainingConfig, _optimizer
from geoseg.training.losses import segmentation_loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(seconds per step, crops per second) over ``args.steps`` timed steps."""
    card = preset_card("loveda", backbone)
    torch.manual_seed(0)
    model = build_manet(card.num_classes, backbone).to(device).train()
    optimizer = _optimizer(model, TrainingConfig())
    amp = autocast_dtype(args.precision, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch_size, 3, args.crop, args.crop), generator=generator, dtype=torch.uint8
    )
    labels = torch.randint(0, card.num_classes, (args.batch_size, args.crop, args.crop), generator=generator)
    images, labels = images.to(device), labels.to(device)

    def step() -> None:
        x = normalize(images, card.value_range, card.mean, card.std)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = segmentation_loss(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - started) / args.steps
    return seconds, args.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backbone")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--backbones", default="resnet18,resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's; 1 on a busy machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop % 32 or args.crop <= 0:
        parser.error("--crop must be a positive multiple of 32")
    device = resolve_device(args.device)
    amp = autocast_dtype(args.precision, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"of {os.cpu_count()} cores, precision {str(amp).replace('torch.', '') if amp else 'fp32'}"
    )
    print(f"crop {args.crop}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'backbone':<10} {'s/step':>8} {'crops/s':>9}")
    for backbone in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        seconds, rate = measure(backbone, args, device)
        print(f"{backbone:<10} {seconds:>8.2f} {rate:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
