"""The image model's network in torch: EfficientNet-Lite0, its weights and its CUDA runner.

Only the CUDA path (or `ML_IMAGE_RUNTIME=torch`) imports this module, and torch is installed
only where it is wanted (`requirements-gpu.txt`). On CPU the server runs an ONNX graph built
from the same weights without torch (`ml.pth`, `ml.image_graph`); this network is also the
reference the tests hold that graph to.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ml.image_graph import BN_EPS, STAGES


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: asymmetric (more on the right) on stride 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # At stride 1 with an odd kernel SAME is symmetric: let the convolution pad natively
        # instead of materialising a padded copy of the input (measured: ~15% of forward).
        self.native = self.stride == (1, 1) and all(k % 2 for k in self.kernel_size)
        if self.native:
            self.padding = tuple(k // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native:
            native: torch.Tensor = super().forward(x)
            return native
        pad_h = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_w = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        out: torch.Tensor = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation,
                                     self.groups)
        return out


def _same_pad(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), no squeeze-excite."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        # Typed as nn.Module: inference folds each BatchNorm into its conv (fold_batchnorm).
        if self.has_expand:
            self._expand_conv: nn.Module = Conv2dSame(c_in, mid, 1, bias=False)
            self._bn0: nn.Module = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv: nn.Module = Conv2dSame(mid, mid, kernel, stride=stride,
                                                     groups=mid, bias=False)
        self._bn1: nn.Module = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv: nn.Module = Conv2dSame(mid, c_out, 1, bias=False)
        self._bn2: nn.Module = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; parameter names follow the lukemelas/EfficientNet-PyTorch files."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem: nn.Module = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0: nn.Module = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand,
                                     c_in if i == 0 else c_out, c_out))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head: nn.Module = Conv2dSame(320, 1280, 1, bias=False)
        self._bn1: nn.Module = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        logits: torch.Tensor = self._fc(self._dropout(x))
        return logits



def load_network(weights: Path) -> EfficientNetLite0:
    """The network with `weights` loaded strictly; raises if the file is missing or wrong."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()



def fold_batchnorm(net: EfficientNetLite0) -> EfficientNetLite0:
    """Fold every BatchNorm into the convolution before it (inference only; in place)."""
    pairs: list[tuple[nn.Module, str, str]] = [(net, "_conv_stem", "_bn0"),
                                               (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if getattr(block, "has_expand", False):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        setattr(owner, conv_name, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())
    return net.eval()


class TorchForward:
    """Probabilities from the torch network on `device` (channels-last, measured faster)."""

    runtime = "torch"

    def __init__(self, net: EfficientNetLite0, device: str = "cpu", threads: int = 0) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self._device = torch.device(device)
        self.net = fold_batchnorm(net).to(self._device).to(memory_format=torch.channels_last)
        # one CUDA stream: concurrent callers would only interleave their kernels
        self._lock = threading.Lock() if self._device.type == "cuda" else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self._device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        if self._lock is None:
            return self._run(x)
        with self._lock:
            return self._run(x)

    def _run(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = torch.softmax(self.net(x).float(), dim=1).cpu().numpy()
        return out


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())
