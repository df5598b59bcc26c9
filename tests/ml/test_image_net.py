"""The torch network (the CUDA path and the reference): weights load strictly, and the
torch-free ONNX graph that serves on CPU gives its answers. torch comes with
requirements-gpu.txt (`make test` installs it): these tests skip without it locally and
fail without it under CI=true."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from ml.artifacts import ArtifactStore, package_file
from ml.config import Settings
from ml.decoding import network_input
from ml.image import WEIGHTS_FILE, WEIGHTS_PACKAGE, build, imagenet_labels
from ml.image_runtime import build_onnx, resolve_device
from ml.samples import PHOTOS, sample_photo

SAMPLES = tuple(PHOTOS)  # skimage chelsea, coffee, astronaut, rocket; sklearn china, flower


@pytest.fixture(scope="module")
def image_net(torch_module: ModuleType) -> ModuleType:
    import ml.image_net

    return ml.image_net


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.stack([network_input(sample_photo(name)) for name in SAMPLES])


@pytest.fixture(scope="module")
def reference(torch_module: ModuleType, image_net: ModuleType, pixels: np.ndarray
              ) -> np.ndarray:
    """Probabilities of the unfused torch network, weights straight from torch.load."""
    torch = torch_module
    net = image_net.EfficientNetLite0()
    net.load_state_dict(torch.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE),
                                   map_location="cpu", weights_only=True), strict=True)
    with torch.inference_mode():
        out: np.ndarray = torch.softmax(net.eval()(torch.from_numpy(pixels)), dim=1).numpy()
    return out


def top5(row: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-row, kind="stable")[:5]]


def test_weights_load_strictly_into_the_architecture(torch_module: ModuleType,
                                                     image_net: ModuleType) -> None:
    state = torch_module.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE), map_location="cpu",
                              weights_only=True)
    net = image_net.EfficientNetLite0()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(4.65e6, rel=0.02)


def test_same_padding_is_asymmetric_on_stride_two(torch_module: ModuleType,
                                                  image_net: ModuleType) -> None:
    conv = image_net.EfficientNetLite0()._conv_stem
    assert conv(torch_module.zeros(1, 3, 224, 224)).shape == (1, 32, 112, 112)


@pytest.mark.parametrize("batched", [pytest.param(True, id="one-batch"),
                                     pytest.param(False, id="one-by-one")])
def test_torch_free_graph_matches_the_torch_network(reference: np.ndarray, pixels: np.ndarray,
                                                    batched: bool) -> None:
    """The ONNX graph built without torch (BatchNorm folded) gives the unfused torch
    network's top-5 on every sample photo, probabilities within 1e-5."""
    from ml.image_runtime import OnnxForward

    forward = OnnxForward(build_onnx(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)))
    ours = forward(pixels) if batched else np.concatenate([forward(p[None]) for p in pixels])
    for name, mine, theirs in zip(SAMPLES, ours, reference, strict=True):
        assert top5(mine) == top5(theirs), name
        assert np.abs(mine - theirs).max() < 1e-5, name


def test_served_model_is_the_torch_free_graph(image_model, reference: np.ndarray,  # type: ignore[no-untyped-def]
                                              pixels: np.ndarray) -> None:
    assert image_model.forward.runtime == "onnxruntime"
    assert np.abs(image_model.probabilities(list(pixels)) - reference).max() < 1e-5


def test_torch_runtime_agrees_with_the_served_graph(settings: Settings, image_model,  # type: ignore[no-untyped-def]
                                                    image_net: ModuleType) -> None:
    """ML_IMAGE_RUNTIME=torch (the CUDA path's code, run on CPU here) gives the same top-5."""
    on_torch = build(settings.replace(image_runtime="torch"), ArtifactStore(settings.cache_dir))
    assert on_torch.forward.runtime == "torch"
    for name in SAMPLES:
        ours, theirs = (m.predict_one(sample_photo(name), top_k=5) for m in (image_model, on_torch))
        assert [p.label for p in ours.predictions] == [p.label for p in theirs.predictions]
        assert [p.confidence for p in ours.predictions] == pytest.approx(
            [p.confidence for p in theirs.predictions], abs=1e-5)


def test_device_resolution_follows_the_setting(torch_module: ModuleType) -> None:
    assert resolve_device("cpu") == "cpu"
    available = torch_module.cuda.is_available()
    assert resolve_device("auto") == ("cuda" if available else "cpu")
    if not available:
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_shipped_labels_are_torchvision_s_list(torch_module: ModuleType) -> None:
    from torchvision.models import ResNet50_Weights

    assert imagenet_labels() == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def test_cuda_path_agrees_with_the_served_graph(settings: Settings, image_model,  # type: ignore[no-untyped-def]
                                                torch_module: ModuleType) -> None:
    """On a machine with a GPU, ML_DEVICE=cuda serves the torch network on CUDA with the
    CPU graph's top-5 (cuDNN's kernels round differently, hence the wider tolerance)."""
    if not torch_module.cuda.is_available():
        pytest.skip("no CUDA device here")
    on_cuda = build(settings.replace(device="cuda"), ArtifactStore(settings.cache_dir))
    assert (on_cuda.device, on_cuda.forward.runtime, on_cuda.preferred_batch) == (
        "cuda", "torch", 32)
    images = [sample_photo(name) for name in SAMPLES]
    for ours, theirs in zip(image_model.predict_images(images, top_k=5),
                            on_cuda.predict_images(images, top_k=5), strict=True):
        assert [p.label for p in ours.predictions] == [p.label for p in theirs.predictions]
        assert [p.confidence for p in ours.predictions] == pytest.approx(
            [p.confidence for p in theirs.predictions], abs=2e-3)
