"""Image model: weights load strictly, golden photos, the ONNX Runtime graph agrees with the
torch network, every input format reaches it (decoding itself: test_decoding.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.artifacts import ArtifactStore, package_file
from ml.config import Settings
from ml.decoding import network_input
from ml.errors import InvalidInput
from ml.image import WEIGHTS_FILE, WEIGHTS_PACKAGE, ImageResult, build, imagenet_labels
from ml.image_net import EfficientNetLite0
from ml.image_runtime import OnnxForward, export_onnx, resolve_device
from tests.conftest import encoded, photo

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_weights_load_strictly_into_the_architecture() -> None:
    state = torch.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE), map_location="cpu",
                       weights_only=True)
    net = EfficientNetLite0()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(4.65e6, rel=0.02)


def test_labels_are_the_imagenet_list() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[967] == "espresso"


def test_same_padding_is_asymmetric_on_stride_two() -> None:
    conv = EfficientNetLite0()._conv_stem
    out = conv(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 32, 112, 112)


@pytest.mark.parametrize(("name", "expected", "min_confidence"), [
    pytest.param("chelsea", CAT_CLASSES, 0.3, id="chelsea-cat"),
    pytest.param("coffee", {"espresso"}, 0.9, id="coffee-espresso"),
])
def test_golden_photos(image_model, name: str, expected: set[str], min_confidence: float) -> None:  # type: ignore[no-untyped-def]
    top = image_model.predict_one(photo(name), top_k=5).predictions[0]
    assert top.label in expected
    assert top.confidence >= min_confidence


def reference_probabilities(images: list[Image.Image]) -> np.ndarray:
    """The unfused torch network, straight from the weights file."""
    reference = EfficientNetLite0()
    reference.load_state_dict(torch.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE),
                                         map_location="cpu", weights_only=True))
    x = torch.from_numpy(np.stack([network_input(image) for image in images]))
    with torch.inference_mode():
        return torch.softmax(reference.eval()(x), dim=1).numpy()


SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")


def test_served_model_matches_the_reference_network(image_model) -> None:  # type: ignore[no-untyped-def]
    """What serves (ONNX Runtime on CPU: BatchNorm folded, exported graph) gives the
    reference network's probabilities, in one batch and one by one."""
    images = [photo(name) for name in SAMPLES]
    expected = reference_probabilities(images)
    pixels = [network_input(image) for image in images]
    assert image_model.forward.runtime == "onnxruntime"
    assert np.abs(image_model.probabilities(pixels) - expected).max() < 1e-4
    for one, row in zip(pixels, expected, strict=True):
        assert np.abs(image_model.probabilities([one])[0] - row).max() < 1e-4


def test_torch_runtime_agrees_with_onnx_runtime(settings: Settings, image_model) -> None:  # type: ignore[no-untyped-def]
    """ML_IMAGE_RUNTIME=torch (the CUDA path's code, run on CPU here) gives the same top-5."""
    on_torch = build(settings.replace(image_runtime="torch"), ArtifactStore(settings.cache_dir))
    assert on_torch.forward.runtime == "torch"
    for name in SAMPLES:
        ours, theirs = (m.predict_one(photo(name), top_k=5) for m in (image_model, on_torch))
        assert [p.label for p in ours.predictions] == [p.label for p in theirs.predictions]
        assert [p.confidence for p in ours.predictions] == pytest.approx(
            [p.confidence for p in theirs.predictions], abs=1e-4)


def test_a_cpu_server_never_imports_torch(settings: Settings, registry) -> None:  # type: ignore[no-untyped-def]
    """All three models loaded and an image classified, on CPU, without importing torch
    (~500 MiB resident)."""
    import subprocess
    import sys

    registry.warmup()  # the child loads cached artifacts, the ONNX graph included
    png = settings.cache_dir / "coffee-check.png"
    png.write_bytes(encoded(photo("coffee")))
    check = ("import sys; from ml.config import Settings; from ml.registry import Registry; "
             "registry = Registry(Settings.from_env()); registry.warmup(); "
             "top = registry.get('image').predict_one(open(sys.argv[1], 'rb').read()); "
             "assert top.predictions[0].label == 'espresso', top; "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", check, str(png)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_export_works_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A notebook or script elsewhere (ml on its sys.path, not in its cwd) can export too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    forward = OnnxForward(export_onnx(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)))
    assert forward(np.zeros((2, 3, 224, 224), np.float32)).shape == (2, 1000)


def test_broken_weights_fail_the_export_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "weights.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"exporting .* to ONNX failed: .+"):
        export_onnx(broken)


def test_result_shape_and_order(image_model) -> None:  # type: ignore[no-untyped-def]
    result = image_model.predict_one(photo("coffee"), top_k=7)
    assert isinstance(result, ImageResult)
    assert len(result.predictions) == 7
    confidences = [p.confidence for p in result.predictions]
    assert confidences == sorted(confidences, reverse=True)
    assert (result.width, result.height) == (600, 400)


def test_batch_matches_single_predictions(image_model) -> None:  # type: ignore[no-untyped-def]
    images = [photo("chelsea"), photo("coffee"), photo("chelsea")]
    batch = image_model.predict_images(images, top_k=3)
    for image, result in zip(images, batch, strict=True):
        single = image_model.predict_one(image, top_k=3)
        assert [p.label for p in result.predictions] == [p.label for p in single.predictions]
        assert [p.confidence for p in result.predictions] == pytest.approx(
            [p.confidence for p in single.predictions], abs=1e-5)
    assert image_model.predict_images([], top_k=3) == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes(image_model, fmt: str) -> None:  # type: ignore[no-untyped-def]
    data = encoded(photo("coffee"), fmt)
    result = image_model.predict_one(data, top_k=1)
    if fmt != "GIF":  # a 256-colour palette may change the answer; decoding is the point
        assert result.predictions[0].label == "espresso"


def test_file_like_and_path_inputs(image_model, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    path = photo_dir / "coffee.jpg"
    with open(path, "rb") as handle:
        from_file = image_model.predict_one(handle, top_k=1)
    from_path = image_model.predict_one(path, top_k=1)
    assert from_file.predictions[0].label == from_path.predictions[0].label == "espresso"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG claiming a huge size: what a decompression bomb looks like to a decoder."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("data", "fragment"), [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"definitely not an image", "not a supported image", id="text"),
    pytest.param(b"%PDF-1.7\n" + b"0" * 100, "not a supported image", id="pdf"),
    pytest.param(encoded(Image.new("RGB", (64, 64)), "PNG")[:60], "corrupt or truncated",
                 id="truncated-png"),
    pytest.param(encoded(photo("coffee"), "JPEG")[:2000], "corrupt or truncated",
                 id="truncated-jpeg"),
    pytest.param(png_header_only(20000, 20000), "pixels", id="20000x20000"),
    pytest.param(png_header_only(100000, 100000), "pixels", id="decompression-bomb"),
    pytest.param(b"\x00" * (10 << 20 | 1), "larger than", id="too-many-bytes"),
])
def test_unusable_input_is_refused(image_model, data: bytes, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        image_model.predict_one(data)
    assert fragment in caught.value.message
    assert caught.value.field == "image"


@pytest.mark.parametrize("top_k", [0, -1, 21, 2.5, "3", True, None])
def test_top_k_is_validated(image_model, top_k: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        image_model.predict_one(photo("coffee"), top_k=top_k)
    assert caught.value.field == "top_k"


def test_device_resolution_follows_the_setting() -> None:
    assert resolve_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_labels_come_from_torchvision_without_importing_it() -> None:
    import subprocess
    import sys

    from torchvision.models import ResNet50_Weights

    from ml.image import imagenet_labels

    assert imagenet_labels() == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    check = ("import sys; from ml.image import imagenet_labels; labels = imagenet_labels(); "
             "assert len(labels) == 1000 and 'torchvision' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
