"""The torch-free ONNX graph: SAME padding and BatchNorm folding as arithmetic, strict about
the weights it takes, and the graph's shape (its answers against the torch network:
test_image_net.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.artifacts import package_file
from ml.errors import InvalidWeights
from ml.image import WEIGHTS_FILE, WEIGHTS_PACKAGE
from ml.image_graph import BN_EPS, ONNX_OPSET, build_graph, fold_batchnorm, same_pad
from ml.pth import load_state_dict


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return load_state_dict(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE))


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    pytest.param(224, 3, 2, (0, 1), id="stem-extra-pixel-after"),
    pytest.param(112, 3, 1, (1, 1), id="stride-1-symmetric"),
    pytest.param(56, 5, 2, (1, 2), id="5x5-stride-2"),
    pytest.param(14, 5, 1, (2, 2), id="5x5-stride-1"),
    pytest.param(7, 1, 1, (0, 0), id="pointwise"),
    pytest.param(7, 3, 2, (1, 1), id="odd-size-stride-2"),
])
def test_same_padding(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> None:
    assert same_pad(size, kernel, stride) == pads
    out = (size + sum(pads) - kernel) // stride + 1
    assert out == -(-size // stride)  # TensorFlow SAME: ceil(size / stride) outputs


def test_folding_batchnorm_gives_conv_then_batchnorm() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 5, 1, 1)).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.01, 2, size=8).astype(np.float32)
    x = rng.normal(size=5)
    conv = weight[:, :, 0, 0].astype(np.float64) @ x
    expected = (conv - mean) / np.sqrt(var + BN_EPS) * gamma + beta
    folded, bias = fold_batchnorm(weight, gamma, beta, mean, var)
    assert folded.dtype == bias.dtype == np.float32
    assert np.allclose(folded[:, :, 0, 0] @ x + bias, expected, atol=1e-5)


def test_the_graph(state: dict[str, np.ndarray]) -> None:
    import onnx

    model = onnx.load_from_string(build_graph(state))
    ops = [node.op_type for node in model.graph.node]
    assert "BatchNormalization" not in ops and "Pad" not in ops  # folded; pads in the convs
    assert ops.count("Conv") == 2 + sum(3 if f"_blocks.{i}._expand_conv.weight" in state else 2
                                        for i in range(16))
    assert ops[-1] == "Softmax"
    assert model.opset_import[0].version == ONNX_OPSET
    [pixels], [probabilities] = model.graph.input, model.graph.output
    assert (pixels.name, probabilities.name) == ("pixels", "probabilities")
    dims = [d.dim_param or d.dim_value for d in pixels.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]


def test_the_graph_runs_any_batch_size(state: dict[str, np.ndarray]) -> None:
    from ml.image_runtime import OnnxForward

    forward = OnnxForward(build_graph(state))
    for batch in (1, 3):
        out = forward(np.zeros((batch, 3, 224, 224), np.float32))
        assert out.shape == (batch, 1000)
        assert np.allclose(out.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(("change", "fragment"), [
    pytest.param(lambda s: s.pop("_blocks.3._bn1.running_var"),
                 "missing tensor _blocks.3._bn1.running_var", id="missing"),
    pytest.param(lambda s: s.update({"_blocks.3._se_reduce.weight": np.zeros(1)}),
                 r"unexpected tensors \['_blocks.3._se_reduce.weight'\]", id="unexpected"),
    pytest.param(lambda s: s.update({"_fc.weight": np.zeros((10, 1280), np.float32)}),
                 r"_fc.weight has shape \(10, 1280\), expected \(1000, 1280\)", id="misshapen"),
])
def test_weights_are_taken_strictly(state: dict[str, np.ndarray], change, fragment: str  # type: ignore[no-untyped-def]
                                    ) -> None:
    changed = dict(state)
    change(changed)
    with pytest.raises(InvalidWeights, match=fragment):
        build_graph(changed, source="changed.pth")
