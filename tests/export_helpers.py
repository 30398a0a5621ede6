"""Small data and models shared by the export tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (N, 1, 8, 8) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 6) -> nn.Module:
    """A few epochs of Adam on (x, y), deterministic (seed 0, one thread); returns the model in eval mode."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def reference_model(name: str, n: int = 96, seed: int = 0) -> tuple[nn.Module, np.ndarray]:
    """A registered model with BatchNorm statistics from one train-mode pass over ``n``
    standard-normal samples (so folding them is not trivial), and those samples."""
    from edge_sdk import models

    torch.manual_seed(seed)
    model = models.create(name)
    x = np.random.default_rng(seed).standard_normal((n, *model.config.input_shape)).astype(np.float32)
    with torch.no_grad():
        model.train()(torch.from_numpy(x))
    return model.eval(), x


def hls4ml_model(qonnx_path, out_dir, io_type: str = "io_stream"):
    """hls4ml's documented QONNX intake (qonnx clean-up, channels-last, Gemm as MatMul), then
    ``convert_from_onnx_model`` for the Vitis backend and ``compile`` (g++ C simulation)."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    from edge_sdk.export._compat import qonnx_ir_fix

    with qonnx_ir_fix():
        model = cleanup_model(ModelWrapper(str(qonnx_path)))
        model = cleanup_model(model.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
        config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                            default_precision="fixed<16,6>")
        hls = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(out_dir), io_type=io_type,
                                                       backend="Vitis", hls_config=config)
        hls.compile()
    return hls
