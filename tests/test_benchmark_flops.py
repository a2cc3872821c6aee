"""``benchmarks/runtime_throughput.py``'s FLOP counter on the kinds of model it meets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import build_tiny_model, tiny_info

pytest.importorskip("onnx")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import runtime_throughput as rt  # noqa: E402


def test_flop_counter_counts_a_conv_and_survives_a_feature_stage_input(tmp_path):
    """A conv encoder: 2 x its multiply-adds for one crop. The bundled model has a second graph input (the feature
    stage's counts) that once made shape inference, and so the whole benchmark, stop: now a number or 0."""
    info = tiny_info()
    path = build_tiny_model(tmp_path / "tiny.onnx", info)
    side = info.crop_size // 8  # the tiny encoder's one conv: 8x8 kernel, stride 8, embedding_dim filters
    assert rt.conv_flops(path, info.crop_size) == 2.0 * info.embedding_dim * side * side * 3 * 8 * 8
    bundled = REPO / "lida_plugin" / "data" / "encoder.onnx"
    assert rt.conv_flops(bundled, 64) >= 0.0
