"""Which convolutions int8 keeps in float32: the search over layer groups, with the agreement measured by a
stand-in so that each verdict is exact."""

from __future__ import annotations

import pytest

from geoseg.export.quantize import TARGET, float32_runs

RUNS = [list(range(start, start + 10)) for start in range(0, 80, 10)]  # 80 convolutions, 8 groups


class Measured:
    """The agreement of an int8 network whose class flips come from ``sensitive`` convolutions only: each
    one quantized costs its share; the calls are counted."""

    def __init__(self, sensitive: dict[int, float]) -> None:
        self.sensitive = sensitive
        self.calls: list[list[int]] = []

    def __call__(self, float32: list[int]) -> float:
        self.calls.append(sorted(float32))
        return 1.0 - sum(cost for index, cost in self.sensitive.items() if index not in float32)


def test_a_network_that_keeps_its_classes_in_int8_keeps_nothing_in_float32():
    measured = Measured({5: 0.001})
    assert float32_runs(RUNS, measured) == ([], pytest.approx(0.999))
    assert measured.calls == [[]]


def test_the_search_narrows_a_group_down_to_the_one_convolution_that_flips_classes():
    """The stem alone (convolution 1) flips 0.5 % of the pixels: it is kept, not its group of ten."""
    measured = Measured({0: 0.005, 42: 0.0001})
    kept, agreed = float32_runs(RUNS, measured)
    assert kept == [[0]]
    assert agreed == pytest.approx(0.9999) and agreed >= TARGET
    assert len(measured.calls) == 1 + 8 + 1 + 3  # int8, each group alone, group 1 kept, 10 -> 5 -> 2 -> 1


def test_a_group_whose_halves_each_flip_classes_stays_whole():
    measured = Measured({2: 0.003, 7: 0.003})
    assert float32_runs(RUNS, measured) == ([RUNS[0]], pytest.approx(1.0))


def test_groups_are_kept_worst_first_and_each_narrowed():
    measured = Measured({11: 0.002, 75: 0.004, 30: 0.0001})
    kept, agreed = float32_runs(RUNS, measured)
    assert kept == [[75], [11]]
    assert agreed == pytest.approx(0.9999)


def test_a_network_that_needs_more_than_half_its_groups_ends_under_the_target():
    """Six groups flip classes: the search stops at four (half of them), unnarrowed, under the target."""
    measured = Measured({index * 10: 0.002 for index in range(6)})
    kept, agreed = float32_runs(RUNS, measured)
    assert len(kept) == 4 and agreed == pytest.approx(0.996) and agreed < TARGET


def test_a_network_without_convolutions_is_written_whole_in_float32(tmp_path):
    """Nothing to quantize: no layer group, nothing kept in float32, the classes all kept (was a crash in
    numpy's array_split with 0 sections)."""
    import numpy as np
    import torch

    from geoseg.export.quantize import quantize_int8

    torch.onnx.export(torch.nn.ReLU(), (torch.zeros(1, 3, 16, 16),), str(tmp_path / "f.onnx"), dynamo=False,
                      input_names=["pixels"])  # fmt: skip
    tiles = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(2)]
    quantized = quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", tiles)
    assert (quantized.float32_layers, quantized.agreement) == ([], 1.0)
    assert (tmp_path / "q.onnx").is_file()
