"""MACU-Net must be the published network: parameter count, key names, block formulas, sizes, numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geoseg.errors import ConfigurationError
from geoseg.model.macunet import ACB, ChannelGate, build_macunet


def test_three_bands_six_classes_have_exactly_5_151_734_parameters_in_339_keys():
    model = build_macunet(6)
    assert sum(p.numel() for p in model.parameters()) == 5_151_734
    state = model.state_dict()
    assert len(state) == 339
    assert sum(1 for k in state if k.endswith("running_mean")) == 27


def test_parameter_count_follows_bands_and_classes_as_published():
    for bands, classes in [(1, 2), (4, 9)]:
        model = build_macunet(classes, in_channels=bands)
        assert sum(p.numel() for p in model.parameters()) == 5_150_912 + 240 * bands + 17 * classes


def test_state_dict_uses_the_authors_names_and_shapes():
    state = build_macunet(6).state_dict()
    expected = {
        "conv1.0.squre.weight": (16, 3, 3, 3),
        "conv1.1.cross_ver.weight": (16, 16, 1, 3),
        "conv1.1.cross_hor.weight": (16, 16, 3, 1),
        "conv2.1.squre.weight": (32, 16, 3, 3),  # index 0 is the max-pool
        "conv5.3.cross_hor.weight": (256, 256, 3, 1),
        "conv14.1.squre.weight": (128, 64, 3, 3),
        "conv34.1.bn.running_var": (128,),
        "skblock4.conv.weight": (256, 640, 1, 1),
        "skblock1.fc11.weight": (2, 32, 1, 1),
        "skblock1.fc22.weight": (32, 2, 1, 1),
        "deconv4.weight": (256, 128, 2, 2),
        "deconv41.weight": (32, 16, 2, 2),
        "deconv1.bias": (16,),
        "conv6.0.squre.weight": (128, 256, 3, 3),
        "conv9.1.bn.num_batches_tracked": (),
        "conv10.weight": (6, 16, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("skblock") and k.endswith("bias") for k in state)  # no biases in the gates


def test_asymmetric_block_sums_a_3x3_a_1x3_and_a_3x1_convolution():
    torch.manual_seed(0)
    block = ACB(3, 5).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 3, 7, 9)
        summed = (
            F.conv2d(x, block.squre.weight, block.squre.bias, padding=1)
            + F.conv2d(x, block.cross_ver.weight, block.cross_ver.bias, padding=(0, 1))
            + F.conv2d(x, block.cross_hor.weight, block.cross_hor.bias, padding=(1, 0))
        )
        normalised = (summed - block.bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            block.bn.running_var.view(1, -1, 1, 1) + 1e-5
        )
        expected = torch.relu(
            normalised * block.bn.weight.view(1, -1, 1, 1) + block.bn.bias.view(1, -1, 1, 1)
        )
        torch.testing.assert_close(block(x), expected)


def test_channel_gate_matches_the_published_formula():
    torch.manual_seed(1)
    gate = ChannelGate(80, 32).double()
    assert gate.fc11.out_channels == 2
    x = torch.randn(2, 80, 5, 6, dtype=torch.float64)
    y = torch.einsum("oc,bchw->bohw", gate.conv.weight[:, :, 0, 0], x)
    mean, peak = y.mean(dim=(2, 3)), y.amax(dim=(2, 3))  # B, C

    def mlp(first, second, v):
        return torch.relu(v @ first.weight[:, :, 0, 0].T) @ second.weight[:, :, 0, 0].T

    weights = torch.sigmoid(mlp(gate.fc11, gate.fc12, mean) + mlp(gate.fc21, gate.fc22, peak))
    with torch.no_grad():
        torch.testing.assert_close(gate(x), y * weights[:, :, None, None])


def test_channel_gate_computes_its_gate_in_float32_under_fp16_autocast():
    """A gate whose hidden sums exceed float16's 65504 (inf − inf = NaN in half precision) stays exact."""
    gate = ChannelGate(16, 32)
    with torch.no_grad():
        gate.conv.weight.fill_(1.0 / 16)
        gate.fc11.weight.fill_(1.0)
        gate.fc12.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(32, 2, 1, 1))
        gate.fc21.weight.zero_()
        gate.fc22.weight.zero_()
        x = torch.full((1, 16, 8, 8), 4000.0)  # y = 4000 everywhere
        hidden = gate.fc11(torch.full((1, 32, 1, 1), 4000.0))
        assert hidden.max() > torch.finfo(torch.float16).max  # 32 × 4000 = 128000: inf in half precision
        with torch.autocast("cpu", dtype=torch.float16):
            out = gate(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.full((1, 32, 8, 8), 2000.0))  # y × sigmoid(0)


def test_non_square_inputs_and_any_band_count_give_logits_at_full_resolution():
    model = build_macunet(4, in_channels=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 5, 48, 80))
    assert out.shape == (2, 4, 48, 80)
    assert torch.isfinite(out).all()


def test_sizes_that_are_not_multiples_of_16_are_refused_with_the_padded_size():
    model = build_macunet(2).eval()
    with pytest.raises(ConfigurationError, match=r"MACU-Net .* multiples of 16, got 40×64; pad to 48×64"):
        model(torch.randn(1, 3, 40, 64))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_logits_stay_finite_and_close_under_autocast(dtype):
    torch.manual_seed(2)
    model = build_macunet(6).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=dtype):
            mixed = model(x)
    assert mixed.shape == (1, 6, 64, 96)
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - reference).abs().max() < 0.1 * reference.abs().max()
