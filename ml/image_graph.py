"""The image network as an ONNX graph, built from the weights' numpy arrays without torch.

EfficientNet-Lite0 written node by node with `onnx.helper`: every BatchNorm folded into the
convolution before it, TensorFlow "SAME" padding as the convolutions' own (asymmetric on
stride 2) pads, ReLU6 as Clip, softmax on top, a dynamic batch axis. The torch network in
`ml.image_net` is the same architecture and the reference the tests hold this graph to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.decoding import IMAGE_SIZE
from ml.errors import InvalidWeights

if TYPE_CHECKING:
    from onnx import NodeProto, TensorProto

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's
# stages; the Lite variants drop squeeze-excite and swish (ReLU6) and fix stem/head widths.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
NUM_CLASSES = 1000
ONNX_OPSET = 17
IR_VERSION = 8  # the IR that goes with opset 17; ONNX Runtime reads it everywhere
GRAPH_VERSION = "numpy-graph-1"  # bump when the graph this module writes changes


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding of one axis: (before, after), the extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def fold_batchnorm(conv: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                   var: np.ndarray, eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias of a bias-free convolution followed by an inference BatchNorm,
    computed in float64 and returned as float32."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    weight = conv.astype(np.float64) * scale.reshape(-1, *([1] * (conv.ndim - 1)))
    bias = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return weight.astype(np.float32), bias.astype(np.float32)


class _Builder:
    """Takes each weight by name exactly once (strict, like torch's load_state_dict) and
    accumulates nodes and initialisers."""

    def __init__(self, state: Mapping[str, np.ndarray], source: object) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.state = dict(state)
        self.source = source
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.counter = 0
        self.clip: tuple[str, str] | None = None  # ReLU6's bounds, shared by every Clip

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.state:
            raise InvalidWeights(self.source, f"missing tensor {name}")
        value = self.state.pop(name)
        if value.shape != shape:
            raise InvalidWeights(self.source, f"tensor {name} has shape {value.shape}, "
                                              f"expected {shape}")
        return value

    def constant(self, value: np.ndarray) -> str:
        name = f"w{len(self.initializers)}"
        self.initializers.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        self.counter += 1
        out = f"{op.lower()}{self.counter}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attributes))
        return out

    def conv_bn(self, x: str, size: int, conv: str, bn: str, c_in: int, c_out: int,
                kernel: int, stride: int = 1, groups: int = 1) -> tuple[str, int]:
        """Convolution + folded BatchNorm; returns the output and its spatial size."""
        weight = self.take(f"{conv}.weight", (c_out, c_in // groups, kernel, kernel))
        gamma, beta, mean, var = (self.take(f"{bn}.{p}", (c_out,))
                                  for p in ("weight", "bias", "running_mean", "running_var"))
        self.take(f"{bn}.num_batches_tracked", ())
        weight, bias = fold_batchnorm(weight, gamma, beta, mean, var)
        before, after = same_pad(size, kernel, stride)
        out = self.node("Conv", [x, self.constant(weight), self.constant(bias)],
                        kernel_shape=[kernel, kernel], strides=[stride, stride],
                        pads=[before, before, after, after], group=groups)
        return out, math.ceil(size / stride)

    def relu6(self, x: str) -> str:
        if self.clip is None:
            self.clip = (self.constant(np.array(0.0, np.float32)),
                         self.constant(np.array(6.0, np.float32)))
        return self.node("Clip", [x, *self.clip])


def build_graph(state: Mapping[str, np.ndarray], source: object = "weights") -> bytes:
    """EfficientNet-Lite0 with the weights in `state` (lukemelas-style names), as a
    serialised ONNX model: input "pixels" (N, 3, 224, 224) float32, output "probabilities"
    (N, 1000). InvalidWeights if a tensor is missing, misshapen or left over."""
    import onnx

    b = _Builder(state, source)
    x, size = b.conv_bn("pixels", IMAGE_SIZE, "_conv_stem", "_bn0", 3, 32, 3, 2)
    x = b.relu6(x)
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in STAGES:
        for i in range(repeats):
            c_block, s_block = (c_in, stride) if i == 0 else (c_out, 1)
            x, size = _mbconv(b, x, size, f"_blocks.{index}", kernel, s_block, expand,
                              c_block, c_out)
            index += 1
    x, size = b.conv_bn(x, size, "_conv_head", "_bn1", 320, 1280, 1)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [b.relu6(x)])], axis=1)
    fc_weight = b.take("_fc.weight", (NUM_CLASSES, 1280)).astype(np.float32)
    fc_bias = b.take("_fc.bias", (NUM_CLASSES,)).astype(np.float32)
    x = b.node("Gemm", [x, b.constant(fc_weight), b.constant(fc_bias)], transB=1)
    b.nodes.append(b.helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    if b.state:
        raise InvalidWeights(source, f"unexpected tensors {sorted(b.state)[:5]}")

    floats = onnx.TensorProto.FLOAT
    graph = b.helper.make_graph(
        b.nodes, "efficientnet_lite0",
        [b.helper.make_tensor_value_info("pixels", floats, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [b.helper.make_tensor_value_info("probabilities", floats, ["batch", NUM_CLASSES])],
        initializer=b.initializers)
    model = b.helper.make_model(graph, producer_name="realtime-ml ml.image_graph",
                                opset_imports=[b.helper.make_opsetid("", ONNX_OPSET)],
                                ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _mbconv(b: _Builder, x: str, size: int, prefix: str, kernel: int, stride: int,
            expand: int, c_in: int, c_out: int) -> tuple[str, int]:
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), no squeeze-excite."""
    inp, mid = x, c_in * expand
    if expand != 1:
        x, size = b.conv_bn(x, size, f"{prefix}._expand_conv", f"{prefix}._bn0", c_in, mid, 1)
        x = b.relu6(x)
    x, size = b.conv_bn(x, size, f"{prefix}._depthwise_conv", f"{prefix}._bn1", mid, mid,
                        kernel, stride, groups=mid)
    x = b.relu6(x)
    x, size = b.conv_bn(x, size, f"{prefix}._project_conv", f"{prefix}._bn2", mid, c_out, 1)
    if stride == 1 and c_in == c_out:
        x = b.node("Add", [x, inp])
    return x, size
