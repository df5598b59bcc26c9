"""How the image network runs: ONNX Runtime on CPU, torch on CUDA.

On CPU the ONNX graph is built from the packaged weights without torch (read by `ml.pth`,
built by `ml.image_graph`) and cached, so the CPU install needs no torch at all; on CUDA the
torch network itself runs (`ml.image_net`, installed with `requirements-gpu.txt`).
Either is a `Forward`: (N, 3, 224, 224) float32 pixels -> (N, 1000) class probabilities.
"""

from __future__ import annotations

import importlib.util
import os
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.image_graph import GRAPH_VERSION, ONNX_OPSET, build_graph
from ml.pth import load_state_dict

GPU_INSTALL = "pip install -r requirements-gpu.txt"


class OnnxForward:
    """Probabilities from the exported graph in ONNX Runtime, on CPU.

    ONNX Runtime ran this network ~2x faster than torch eager on this machine (6.7 vs 12-16 ms
    per image, 2 threads) and costs ~80 MiB where importing torch costs ~500 MiB.
    `Run` is thread-safe: concurrent callers share the session's intra-op thread pool.
    """

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, model: bytes, threads: int = 0) -> None:
        # Before its first import: ONNX Runtime otherwise writes a device id and a telemetry
        # database under ~/.cache/Microsoft (outside ML_CACHE_DIR) and may try to send them.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(None, {"pixels": batch})[0]
        return out


class Forward(Protocol):
    """(N, 3, 224, 224) float32 pixels -> (N, 1000) class probabilities."""

    runtime: str
    device: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def torch_installed() -> bool:
    """Whether torch can be imported here, asked without importing it."""
    return importlib.util.find_spec("torch") is not None


def resolve_device(setting: str) -> str:
    """"cuda" when allowed and present, else "cpu".

    torch is asked only where an NVIDIA driver is loaded and torch is installed: without
    either no CUDA device can be used, and a CPU server need not pay for importing torch."""
    if setting == "cpu":
        return "cpu"
    if Path("/proc/driver/nvidia/version").exists() and torch_installed():
        from ml.image_net import cuda_available

        if cuda_available():
            return "cuda"
    if setting == "cuda":
        if not torch_installed():
            raise RuntimeError(f"ML_DEVICE=cuda needs torch: {GPU_INSTALL}")
        raise RuntimeError("ML_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def build_onnx(weights: Path) -> bytes:
    """The network with `weights`, BatchNorm folded, softmax on top, as a serialised ONNX
    graph; built from the file's tensors without torch (InvalidWeights for a bad file)."""
    return build_graph(load_state_dict(weights), source=weights)


def make_forward(settings: Settings, store: ArtifactStore, weights: Path, digest: str
                 ) -> Forward:
    """The runtime the settings and the device call for (ML_DEVICE, ML_IMAGE_RUNTIME)."""
    device = resolve_device(settings.device)
    runtime = settings.image_runtime
    if runtime == "auto":
        runtime = "torch" if device == "cuda" else "onnxruntime"
    if runtime == "torch":
        if not torch_installed():
            raise RuntimeError(f"ML_IMAGE_RUNTIME=torch needs torch: {GPU_INSTALL}")
        from ml.image_net import TorchForward, load_network

        return TorchForward(load_network(weights), device, settings.torch_threads)
    if device == "cuda":
        raise RuntimeError("ML_IMAGE_RUNTIME=onnxruntime runs on CPU only; "
                           "set ML_DEVICE=cpu or ML_IMAGE_RUNTIME=torch")
    key = f"{digest}|{GRAPH_VERSION}|onnx {metadata.version('onnx')}|opset {ONNX_OPSET}"
    model = store.get_or_build("image-onnx", key, lambda: build_onnx(weights))
    return OnnxForward(model, settings.torch_threads)
