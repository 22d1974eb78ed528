"""MAResU-Net must be the published network: parameter count, key names, the Taylor attention formula (not
MANet's), non-square inputs (which the authors' file cannot take), numerics under autocast."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import ConfigurationError
from geoseg.model.layers import ChannelAttention, KernelAttention
from geoseg.model.maresunet import AttentionLayer, TaylorAttention, build_maresunet


def _direct_taylor_attention(layer: TaylorAttention, x: torch.Tensor) -> torch.Tensor:
    """The published formula with an explicit N×N weight matrix: out_n = Σ_j (1 + cos(q_n, k_j)) V_j / Σ_j
    (1 + cos(q_n, k_j)), the eps added to each key-channel sum of the denominator."""
    batch, channels, height, width = x.shape
    q = layer.query_conv(x).flatten(2)  # B, m, N
    k = layer.key_conv(x).flatten(2)
    v = layer.value_conv(x).flatten(2)  # B, C, N
    q_hat = q / torch.sqrt((q * q).sum(dim=1, keepdim=True))
    k_hat = k / torch.sqrt((k * k).sum(dim=1, keepdim=True))
    weights = 1 + torch.einsum("bmi,bmj->bij", q_hat, k_hat)  # B, N(query), N(key): quadratic memory
    denominator = weights.sum(dim=-1) + layer.eps * q_hat.sum(dim=1)  # B, N
    out = torch.einsum("bij,bcj->bci", weights, v) / denominator.unsqueeze(1)
    return x + layer.gamma * out.view(batch, channels, height, width)


def _with_gammas(model: torch.nn.Module, value: float) -> torch.nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(value)
    return model


def test_six_classes_have_exactly_26_276_510_parameters_in_370_keys():
    model = build_maresunet(6)
    assert sum(p.numel() for p in model.parameters()) == 26_276_510
    state = model.state_dict()
    assert len(state) == 370
    assert sum(1 for k in state if k.endswith("running_mean")) == 48
    assert sum(p.numel() for p in build_maresunet(2).parameters()) == 26_274_776 + 289 * 2


def test_state_dict_uses_the_authors_names_and_shapes():
    state = build_maresunet(6).state_dict()
    expected = {
        "firstconv.weight": (64, 3, 7, 7),
        "encoder1.2.conv2.weight": (64, 64, 3, 3),
        "encoder4.0.downsample.0.weight": (512, 256, 1, 1),
        "attention4.conv1.0.weight": (512, 512, 3, 3),
        "attention4.PAM.query_conv.weight": (64, 512, 1, 1),
        "attention1.PAM.value_conv.weight": (64, 64, 1, 1),
        "attention2.conv2C.1.0.weight": (128, 128, 1, 1),
        "attention2.conv2P.1.0.bias": (128,),
        "attention1.conv3.1.0.weight": (64, 64, 1, 1),
        "attention3.PAM.gamma": (1,),
        "attention3.CAM.gamma": (1,),
        "decoder4.conv1.weight": (128, 512, 1, 1),
        "decoder1.conv3.weight": (64, 16, 1, 1),
        "finaldeconv1.weight": (64, 32, 4, 4),
        "finalconv3.weight": (6, 32, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "encoder1.0.conv3.weight" not in state  # BasicBlocks (ResNet-34), not MANet's Bottlenecks


def test_taylor_attention_equals_the_direct_quadratic_evaluation_on_a_non_square_input():
    torch.manual_seed(0)
    layer = TaylorAttention(32).double()
    with torch.no_grad():
        layer.gamma.fill_(0.7)
        x = torch.randn(2, 32, 6, 10, dtype=torch.float64)
        fast = layer(x)
        torch.testing.assert_close(fast, _direct_taylor_attention(layer, x), rtol=1e-10, atol=1e-10)
        layer.gamma.zero_()  # the published initialisation makes the layer the identity
        torch.testing.assert_close(layer(x), x)


def test_taylor_attention_is_not_manets_kernel_attention_with_the_same_weights():
    """Same key names and shapes, different formula: loading one's weights into the other changes outputs."""
    torch.manual_seed(1)
    taylor = TaylorAttention(32)
    kernel = KernelAttention(32)
    assert taylor.state_dict().keys() == kernel.state_dict().keys()
    with torch.no_grad():
        taylor.gamma.fill_(1.0)
        kernel.load_state_dict(taylor.state_dict())
        x = torch.randn(1, 32, 8, 8)
        assert (taylor(x) - kernel(x)).abs().max() > 0.05


def test_attention_layer_wires_conv_pam_cam_and_the_dropout_convs_as_published():
    torch.manual_seed(2)
    layer = _with_gammas(AttentionLayer(16), 0.5).eval()
    assert isinstance(layer.CAM, ChannelAttention)
    assert isinstance(layer.conv2P[0], torch.nn.Dropout2d) and layer.conv2P[0].p == 0.1
    x = torch.randn(1, 16, 4, 6)
    with torch.no_grad():
        x1 = torch.relu(layer.conv1[0](x))
        p = torch.relu(layer.conv2P[1][0](layer.PAM(x1)))
        c = torch.relu(layer.conv2C[1][0](layer.CAM(x1)))
        expected = torch.relu(layer.conv3[1][0](p + c))
        torch.testing.assert_close(layer(x), expected)


def test_non_square_inputs_give_logits_at_full_resolution():
    """The authors' file raises at H ≠ W; here the attention maps are reshaped to (H, W)."""
    model = _with_gammas(build_maresunet(5), 0.3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 128))
    assert out.shape == (1, 5, 64, 128)
    assert torch.isfinite(out).all()


def test_transposed_input_gives_transposed_logits():
    """A swapped (W, H) reshape would scramble positions; with (H, W) the network commutes with transposition
    wherever its convolutions do (checked on the attention layer, whose convolutions are 1×1 and 3×3)."""
    torch.manual_seed(3)
    layer = _with_gammas(AttentionLayer(16), 0.5).eval()
    with torch.no_grad():
        conv = layer.conv1[0]
        conv.weight.copy_((conv.weight + conv.weight.transpose(-1, -2)) / 2)  # a symmetric 3×3 kernel
        x = torch.randn(1, 16, 4, 6)
        torch.testing.assert_close(layer(x.transpose(-1, -2)), layer(x).transpose(-1, -2))


def test_sizes_that_are_not_multiples_of_32_are_refused_with_the_padded_size():
    model = build_maresunet(2).eval()
    with pytest.raises(ConfigurationError, match=r"MAResU-Net .* multiples of 32, got 64×80; pad to 64×96"):
        model(torch.randn(1, 3, 64, 80))


def test_taylor_attention_stays_finite_in_fp16_autocast_where_half_precision_overflows():
    """Σ_j V_j over 128² positions exceeds float16's 65504; the layer must compute its sums in float32."""
    torch.manual_seed(4)
    layer = TaylorAttention(64)
    with torch.no_grad():
        layer.gamma.fill_(1.0)
        x = torch.randn(1, 64, 128, 128) + 4
        reference = layer(x)
        half_sums = layer.value_conv(x).half().flatten(2).sum(-1)
        with torch.autocast("cpu", dtype=torch.float16):
            mixed = layer(x.half())
    assert not torch.isfinite(half_sums).all(), "the test input must overflow a float16 value sum"
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=2e-2)


def test_logits_stay_finite_under_bf16_autocast():
    torch.manual_seed(5)
    model = _with_gammas(build_maresunet(6), 1.0).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 128, 96) * 2)
    assert out.shape == (1, 6, 128, 96)
    assert torch.isfinite(out).all()
