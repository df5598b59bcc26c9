"""Image model: golden photos, the torch-free CPU build, every input format reaches it
(decoding itself: test_decoding.py; the weights reader: test_pth.py; the graph:
test_image_graph.py; the torch reference network and the CUDA path: test_image_net.py)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.errors import InvalidInput, InvalidWeights
from ml.image import ImageResult, build, imagenet_labels
from tests.conftest import encoded, photo

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
ROOT = Path(__file__).resolve().parents[2]


def test_labels_are_the_imagenet_list() -> None:
    labels = imagenet_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert (labels[0], labels[281], labels[967], labels[999]) == (
        "tench", "tabby", "espresso", "toilet tissue")


@pytest.mark.parametrize(("name", "expected", "min_confidence"), [
    pytest.param("chelsea", CAT_CLASSES, 0.3, id="chelsea-cat"),
    pytest.param("coffee", {"espresso"}, 0.9, id="coffee-espresso"),
])
def test_golden_photos(image_model, name: str, expected: set[str], min_confidence: float) -> None:  # type: ignore[no-untyped-def]
    top = image_model.predict_one(photo(name), top_k=5).predictions[0]
    assert top.label in expected
    assert top.confidence >= min_confidence


def test_a_cpu_server_never_imports_torch(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    """All three models loaded and an image classified, on CPU, without importing torch
    (~500 MiB resident), and nothing written outside ML_CACHE_DIR (ONNX Runtime's
    telemetry would put a device id under ~/.cache/Microsoft)."""
    import os

    registry.warmup()  # the child loads cached artifacts, the ONNX graph included
    png = settings.cache_dir / "coffee-check.png"
    png.write_bytes(encoded(photo("coffee")))
    check = ("import sys; from ml.config import Settings; from ml.registry import Registry; "
             "registry = Registry(Settings.from_env()); registry.warmup(); "
             "top = registry.get('image').predict_one(open(sys.argv[1], 'rb').read()); "
             "assert top.predictions[0].label == 'espresso', top; "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp),
           "ML_CACHE_DIR": str(settings.cache_dir)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    result = subprocess.run([sys.executable, "-c", check, str(png)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [*home.rglob("*"), *temp.rglob("*")] == []


# As if not installed: `import torch` raises ImportError, importlib's find_spec says None.
BLOCK_TORCH = "import sys\nsys.modules.update(dict.fromkeys(('torch', 'torchvision', 'triton')))\n"


def test_the_cpu_model_builds_and_serves_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    """requirements.txt has no torch: from an empty cache, in a process where importing
    torch fails, the image model is built from the packaged weights and classifies."""
    png = tmp_path / "coffee.png"
    png.write_bytes(encoded(photo("coffee")))
    check = BLOCK_TORCH + (
        "from ml.config import Settings; from ml.artifacts import ArtifactStore\n"
        "from ml.image import build\n"
        "settings = Settings.from_env({'ML_CACHE_DIR': sys.argv[2], 'ML_DEVICE': 'auto'})\n"
        "model = build(settings, ArtifactStore(settings.cache_dir))\n"
        "top = model.predict_one(open(sys.argv[1], 'rb').read()).predictions[0]\n"
        "assert (model.forward.runtime, top.label) == ('onnxruntime', 'espresso'), top\n"
        "print('served', top.label)\n")
    result = subprocess.run([sys.executable, "-c", check, str(png), str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "served espresso"
    assert (tmp_path / "cache" / "image-onnx.artifact").is_file()


@pytest.mark.parametrize("setting", [
    pytest.param({"ML_DEVICE": "cuda"}, id="ML_DEVICE=cuda"),
    pytest.param({"ML_IMAGE_RUNTIME": "torch"}, id="ML_IMAGE_RUNTIME=torch"),
])
def test_asking_for_torch_without_it_says_how_to_install_it(tmp_path: Path,
                                                            setting: dict[str, str]) -> None:
    check = BLOCK_TORCH + (
        "import json\nfrom ml.config import Settings; from ml.artifacts import ArtifactStore\n"
        "from ml.image import build\n"
        "settings = Settings.from_env({'ML_CACHE_DIR': sys.argv[1], **json.loads(sys.argv[2])})\n"
        "try:\n    build(settings, ArtifactStore(settings.cache_dir))\n"
        "except RuntimeError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", check, str(tmp_path), json.dumps(setting)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "needs torch: pip install -r requirements-gpu.txt" in result.stdout


@pytest.mark.parametrize(("content", "fragment"), [
    pytest.param(b"not a checkpoint", "not a torch state dict", id="text"),
    pytest.param(b"PK\x03\x04 this is not a torch checkpoint" * 100, "not a torch state dict",
                 id="broken-zip"),
])
def test_broken_weights_fail_the_build_with_the_reason(settings: Settings, tmp_path: Path,
                                                       content: bytes, fragment: str) -> None:
    broken = tmp_path / "weights.pth"
    broken.write_bytes(content)
    with pytest.raises(InvalidWeights, match=fragment):
        build(settings.replace(image_weights=broken), ArtifactStore(tmp_path / "cache"))


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
    # the GIF's 256-colour palette still reads as espresso (0.96, as the PNG)
    assert result.predictions[0].label == "espresso"
    assert (result.width, result.height) == (600, 400)


@pytest.mark.parametrize(("first", "second", "expected"), [
    pytest.param("coffee", "chelsea", {"espresso"}, id="coffee-then-cat"),
    pytest.param("chelsea", "coffee", CAT_CLASSES, id="cat-then-coffee"),
])
def test_an_animated_gif_is_classified_by_its_first_frame(image_model, first: str,  # type: ignore[no-untyped-def]
                                                          second: str,
                                                          expected: set[str]) -> None:
    """A two-frame GIF answers as its first frame alone, not as its second."""
    size = photo("coffee").size  # both frames one size: a GIF has one canvas
    frames = [photo(name).resize(size) for name in (first, second)]
    animated = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(animated)), "n_frames", 1) == 2
    result = image_model.predict_one(animated, top_k=3)
    assert result == image_model.predict_one(encoded(frames[0], "GIF"), top_k=3)
    assert result.predictions[0].label in expected
    shown = Image.open(io.BytesIO(animated))
    shown.seek(1)  # the second frame as Pillow decodes it, to tell it apart
    later = image_model.predict_one(encoded(shown.convert("RGB")), top_k=3)
    assert later.predictions[0].label not in expected


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
