"""Inference preparation: BatchNorms folded into the convolutions before them, found from the data flow, for
every network geoseg builds; the caller's model untouched; the classes of real tiles kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from geoseg.errors import GeosegWarning
from geoseg.inference.acceleration import AcceleratedNetwork, HalvingBatches, accelerate, fold_batchnorm
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint
from geoseg.model.macunet import build_macunet
from geoseg.model.manet import build_manet
from geoseg.model.maresunet import build_maresunet
from geoseg.model.normalize import normalize

CPU = torch.device("cpu")


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their initial values (which fold to identity),
    attention switched on (gammas start at zero), so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
            if isinstance(getattr(module, "gamma", None), nn.Parameter):
                module.gamma.fill_(0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("build", "norms"),
    [
        (
            lambda: build_manet(6, "resnet18"),
            32,
        ),  # stem, 8 basic blocks (2 + 3 downsamples), 4 decoder blocks
        (lambda: build_maresunet(6), 48),  # ResNet-34: stem, 16 blocks (33 + 3), 4 decoder blocks (12)
        (lambda: build_macunet(6), 27),  # one per asymmetric block, after the sum of its three convolutions
    ],
    ids=["manet", "maresunet", "macunet"],
)
def test_every_batchnorm_of_each_network_is_folded_and_the_logits_stay(build, norms):
    model = _trained_statistics(build())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        logits = folded(x)
    assert _count(model, nn.BatchNorm2d) == norms
    assert _count(folded, nn.BatchNorm2d) == 0
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    state = model.state_dict()  # the caller's model is not changed: it may be trained further
    assert state.keys() == before.keys() and all(torch.equal(state[k], v) for k, v in before.items())
    assert _count(accelerate(model, CPU), nn.BatchNorm2d) == 0  # what predict runs


@pytest.mark.parametrize("avx512", [True, False])
def test_compile_gets_the_folded_network(monkeypatch, pretend_cpu, avx512):
    pretend_cpu(avx512=avx512)
    compiled = []

    def fake_compile(model, dynamic):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _trained_statistics(build_macunet(6))
    network = accelerate(model, CPU, compile=True)
    [seen] = compiled
    assert _count(seen, nn.BatchNorm2d) == 0 and seen is network.model
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x), rtol=1e-4, atol=1e-4)


class ReadTwice(nn.Module):
    """conv -> bn, but the convolution's output is also added after the BatchNorm: folding would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.head_bn = nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.head_bn(self.head(self.bn(y) + y))


def test_a_convolution_output_read_elsewhere_too_keeps_its_batchnorm():
    model = _trained_statistics(ReadTwice())
    folded = fold_batchnorm(model)
    assert isinstance(folded.bn, nn.BatchNorm2d)  # y is read by the sum as well
    assert isinstance(folded.head_bn, nn.Identity)  # the head's output feeds its BatchNorm alone
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


class SixteenOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)

    def forward(self, x):
        if x.shape[-1] != 16:
            raise ValueError("this network takes 16-pixel tiles only")
        return self.bn(self.conv(x))


def test_a_network_the_probe_input_does_not_fit_runs_unfolded():
    model = SixteenOnly().eval()
    assert fold_batchnorm(model) is model


@pytest.mark.parametrize("avx512", [True, False])
def test_a_folded_network_learns_its_batch_size_for_the_callers_model(pretend_cpu, avx512):
    """Each scene prepares (folds) the model again: the size that fitted holds for all of them, whether the
    folded network runs as it is or wrapped in its channels_last layout (AVX512)."""
    pretend_cpu(avx512=avx512)
    attempts = []

    class SmallMemory(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            if len(x) > 1:  # the fold's probe runs one tile
                attempts.append(len(x))
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return self.bn(self.conv(x))

    model = SmallMemory().eval()
    batch = torch.zeros(4, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two scenes
            network = accelerate(model, CPU)
            folded = network.model if avx512 else network
            assert isinstance(network, AcceleratedNetwork) is avx512
            assert folded is not model and isinstance(folded.bn, nn.Identity)
            assert HalvingBatches(4, network, None)(network, batch).shape == (4, 2, 8, 8)
    assert attempts == [4, 2, 2, 2, 2]  # one failed attempt in all
    assert [str(w.message) for w in caught if issubclass(w.category, GeosegWarning)] == [
        "out of GPU memory with 4 tiles per batch: running 2 tile(s) at a time from now on "
        "(set batch_size=2 to start there)"
    ]


# --- real tiles ---------------------------------------------------------------------------------------------

# Real 256² crops (file under shared/data, row, column), as in test_precision: varied scenes, several classes.
CROPS = [
    ("aerial/netherlands_0p25m_epsg28992.tif", 600, 600),
    ("labeled/vaihingen/image_area1_0_0_512_512_irrg.png", 0, 0),
    ("labeled/loveda/image_0.png", 512, 0),
]


def _real_tiles(shared_data, card) -> torch.Tensor:
    tiles = []
    for name, row, col in CROPS:
        with rasterio.open(shared_data / name) as src:
            tiles.append(src.read([1, 2, 3], window=Window(col, row, 256, 256)))
    return normalize(torch.from_numpy(np.stack(tiles)), card.value_range, card.mean, card.std)


def _classes(network, x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        return network(x).float().argmax(1)


@pytest.mark.slow
def test_folding_keeps_the_bundled_models_classes_on_real_tiles(shared_data):
    model, card = load_checkpoint(default_checkpoint_path())
    x = _real_tiles(shared_data, card)
    plain, folded = _classes(model.eval(), x, None), _classes(fold_batchnorm(model), x, None)
    assert len(plain.unique()) >= 4
    assert (folded == plain).float().mean().item() >= 0.9999


@pytest.mark.slow  # the bundled ResNet-50 in emulated bf16 (no native bf16 here): a minute
def test_folding_does_not_lower_bf16_agreement_with_float32(shared_data):
    model, card = load_checkpoint(default_checkpoint_path())
    x = _real_tiles(shared_data, card)
    reference = _classes(model.eval(), x, None)
    plain = (_classes(model, x, torch.bfloat16) == reference).float().mean().item()
    folded = (_classes(fold_batchnorm(model), x, torch.bfloat16) == reference).float().mean().item()
    assert folded >= plain, f"bf16 agreement {folded:.4%} folded, {plain:.4%} unfolded"
