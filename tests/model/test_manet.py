"""MANet must be the published network: parameter count, key names, attention formulas, shapes, numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geoseg.errors import ConfigurationError
from geoseg.model.layers import ChannelAttention, KernelAttention
from geoseg.model.manet import build_manet


def _direct_kernel_attention(layer: KernelAttention, x: torch.Tensor) -> torch.Tensor:
    """The published formula evaluated position by position with an explicit N×N weight matrix."""
    batch, channels, height, width = x.shape
    q = F.softplus(layer.query_conv(x)).flatten(2)  # B, m, N
    k = F.softplus(layer.key_conv(x)).flatten(2)
    v = layer.value_conv(x).flatten(2)  # B, C, N
    similarity = torch.einsum("bmi,bmj->bij", q, k)  # B, N(query), N(key): quadratic memory
    key_sum = k.sum(dim=-1) + layer.eps  # B, m
    denominator = torch.einsum("bmi,bm->bi", q, key_sum)  # B, N
    out = torch.einsum("bij,bcj->bci", similarity, v) / denominator.unsqueeze(1)
    return x + layer.gamma * out.view(batch, channels, height, width)


def test_resnet50_with_6_classes_has_exactly_35_860_622_parameters():
    model = build_manet(6)
    assert sum(p.numel() for p in model.parameters()) == 35_860_622


def test_state_dict_uses_the_original_repository_names_and_shapes():
    state = build_manet(6).state_dict()
    assert len(state) == 440
    expected = {
        "firstconv.weight": (64, 3, 7, 7),
        "encoder4.2.conv3.weight": (2048, 512, 1, 1),
        "attention4.PAM.query_conv.weight": (256, 2048, 1, 1),
        "attention4.PAM.value_conv.weight": (2048, 2048, 1, 1),
        "attention1.PAM.key_conv.weight": (32, 256, 1, 1),
        "attention2.CAM.gamma": (1,),
        "decoder4.conv1.weight": (512, 2048, 1, 1),
        "decoder4.deconv2.weight": (512, 512, 3, 3),
        "decoder4.conv3.weight": (1024, 512, 1, 1),
        "decoder1.conv3.weight": (256, 64, 1, 1),
        "finaldeconv1.weight": (256, 32, 4, 4),
        "finalconv3.weight": (6, 32, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize(
    "backbone, widths", [("resnet18", (64, 512)), ("resnet34", (64, 512)), ("resnet101", (256, 2048))]
)
def test_attention_and_decoder_widths_follow_the_encoder(backbone, widths):
    first, last = widths
    state = build_manet(5, backbone).state_dict()
    assert tuple(state["attention4.PAM.query_conv.weight"].shape) == (last // 8, last, 1, 1)
    assert tuple(state["attention1.PAM.value_conv.weight"].shape) == (first, first, 1, 1)
    assert tuple(state["finaldeconv1.weight"].shape) == (first, 32, 4, 4)
    assert tuple(state["finalconv3.weight"].shape) == (5, 32, 3, 3)


def test_kernel_attention_equals_the_direct_quadratic_evaluation():
    torch.manual_seed(0)
    layer = KernelAttention(64).double()
    with torch.no_grad():
        layer.gamma.fill_(0.7)
    x = torch.randn(2, 64, 6, 10, dtype=torch.float64)
    with torch.no_grad():
        fast = layer(x)
        direct = _direct_kernel_attention(layer, x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
    # gamma = 0 (the published initialisation) makes the layer the identity
    with torch.no_grad():
        layer.gamma.zero_()
        torch.testing.assert_close(layer(x), x)


def test_kernel_attention_float32_matches_the_direct_formula_to_1e_5():
    torch.manual_seed(1)
    layer = KernelAttention(32)
    with torch.no_grad():
        layer.gamma.fill_(1.0)
        x = torch.randn(1, 32, 8, 8)
        torch.testing.assert_close(layer(x), _direct_kernel_attention(layer, x), rtol=1e-5, atol=1e-5)


def test_channel_attention_matches_the_published_formula():
    torch.manual_seed(2)
    layer = ChannelAttention()
    with torch.no_grad():
        layer.gamma.fill_(0.5)
    x = torch.randn(1, 4, 3, 5)
    flat = x.flatten(2)[0]  # C, N
    energy = flat @ flat.T
    attention = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    expected = 0.5 * (attention @ flat).view(1, 4, 3, 5) + x
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)


def test_non_square_inputs_give_logits_at_full_resolution():
    model = build_manet(7, "resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 160))
    assert out.shape == (2, 7, 64, 160)
    assert torch.isfinite(out).all()


def test_height_not_a_multiple_of_32_is_refused_with_the_padded_size():
    model = build_manet(2, "resnet18").eval()
    with pytest.raises(ConfigurationError, match=r"100×64.*pad to 128×64"):
        model(torch.randn(1, 3, 100, 64))


def test_other_band_counts_get_a_stem_of_their_width():
    model = build_manet(3, "resnet18", in_channels=4).eval()
    assert tuple(model.state_dict()["firstconv.weight"].shape) == (64, 4, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="unknown backbone 'resnet12'"):
        build_manet(6, "resnet12")


def test_kernel_attention_stays_finite_in_fp16_autocast_where_half_precision_overflows():
    """The key sums over 128² positions exceed float16's 65504; the layer must compute them in float32."""
    torch.manual_seed(3)
    layer = KernelAttention(64)
    with torch.no_grad():
        layer.gamma.fill_(1.0)
        x = torch.randn(1, 64, 128, 128) * 8 + 8
        reference = layer(x)
        with torch.autocast("cpu", dtype=torch.float16):
            mixed = layer(x.half())
        half_keys = F.softplus(layer.key_conv(x)).half().flatten(2).sum(-1)
    assert not torch.isfinite(half_keys).all(), "the test input must overflow a float16 key sum"
    assert mixed.dtype == torch.float32
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_resnet50_logits_stay_finite_under_bf16_autocast_on_a_real_size_tile():
    """(float16 autocast of a whole ResNet-50 has no fast CPU kernels; the layer test above covers fp16.)"""
    torch.manual_seed(4)
    model = build_manet(6).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(1, 3, 512, 512) * 2)
    assert out.shape == (1, 6, 512, 512)
    assert torch.isfinite(out).all()
