"""Images from untrusted bytes to network input, with memory bounded by design.

A small file can describe a huge image: a 2.6 KB PNG of 25x100,000 pixels, a 200 KB TIFF
of 40 Mpx float pixels. So before any pixel is decoded:

- the header is read and the image refused (InvalidInput) if it has too many pixels, an
  extreme aspect ratio, or would need more than `max_decode_bytes` of memory to decode in
  its own pixel format (JPEGs are first asked to decode at a reduced scale, which libjpeg
  does for free);
- the decode waits for room in a process-wide `DecodeBudget` of bytes, so concurrent
  decodes cannot add up to more than the budget.

After decoding, nothing the size of the image is made again: the network's centre crop is
resampled straight from the decoded pixels (`resize(box=...)`) in their own format, and
only the 224x224 result is converted to 8-bit RGB. EXIF orientation is applied to that
result, by mapping the crop box into the stored image's coordinates, not by rotating the
whole image. Deep pixel formats (16-bit, 32-bit, float) are scaled to 8 bits after the
resize, with the range of the whole image.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml import memory
from ml.errors import InvalidInput, Overloaded

IMAGE_SIZE = 224
RESIZE_SIZE = 256
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
ORIENTATION = 0x0112  # the EXIF tag
TRIM_AFTER = 8 << 20  # decodes this large hand their heap leftovers back when done
logger = logging.getLogger(__name__)

ImageInput = bytes | bytearray | memoryview | IO[bytes] | Image.Image | Path

# Bytes per pixel as Pillow stores each mode (three-band modes take four bytes a pixel).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# A copy the size of the image that these modes need before they can be resampled: 1-bit
# and palette images cannot be interpolated as they are; transparent ones are resampled
# premultiplied (Pillow's own rule, or ours for palettes).
_CONVERSION = {"1": "L", "P": "RGB", "PA": "RGBa", "LA": "La", "RGBA": "RGBa"}
# Pillow's transpose for each EXIF orientation (as ImageOps.exif_transpose).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_SWAPS_AXES = (5, 6, 7, 8)


@dataclass(frozen=True)
class DecodeLimits:
    """What one image may be: encoded bytes, pixels, aspect ratio, memory to decode."""

    max_bytes: int = 10 << 20
    max_pixels: int = 40_000_000
    max_aspect: float = 20.0
    max_decode_bytes: int = 48 << 20


@dataclass(frozen=True)
class PreparedImage:
    """A decoded image as the network takes it, with its size as displayed."""

    pixels: np.ndarray  # (3, 224, 224) float32
    width: int
    height: int


class DecodeBudget:
    """Bytes that image decodes in flight may hold together. A decode that does not fit
    waits for room, up to `wait_s`, then is refused with Overloaded (503 over HTTP)."""

    def __init__(self, total: int, *, wait_s: float = 10.0) -> None:
        self.total = total
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Reserve `nbytes` for the duration of the block."""
        nbytes = min(nbytes, self.total)
        deadline = time.monotonic() + self.wait_s
        with self._room:
            while self.in_use + nbytes > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    if self.in_use + nbytes > self.total:
                        raise Overloaded("image", retry_after_s=1.0)
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._room:
                self.in_use -= nbytes
                idle = self.in_use == 0
                self._room.notify_all()
            if idle and nbytes >= TRIM_AFTER:
                memory.trim()  # a large decode's leftovers in the heap go back to the OS


@dataclass
class _Opened:
    """An image whose header has been read and checked, its pixels not yet decoded."""

    image: Image.Image
    width: int  # as stored, at full resolution (a JPEG may then decode at a reduced scale)
    height: int
    cost: int  # bytes decoding and resampling it will hold at most
    owned: bool  # opened here from bytes (load it); a caller's Image is already loaded

    def shown_size(self, orientation: int) -> tuple[int, int]:
        """Width and height as displayed, after EXIF `orientation`."""
        if orientation in _SWAPS_AXES:
            return self.height, self.width
        return self.width, self.height


def open_image(data: ImageInput, limits: DecodeLimits) -> _Opened:
    """Read and check the header: InvalidInput for anything unusable or too big."""
    if isinstance(data, Image.Image):
        image, owned = data, False
    else:
        if isinstance(data, Path):
            data = data.read_bytes()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            if not callable(getattr(data, "read", None)):
                raise InvalidInput(f"image must be the file's bytes, not "
                                   f"{type(data).__name__}", field="image")
            data = data.read(limits.max_bytes + 1)
        raw = bytes(data)
        if not raw:
            raise InvalidInput("image is empty", field="image")
        if len(raw) > limits.max_bytes:
            raise InvalidInput(f"image is larger than {limits.max_bytes / 2**20:g} MB "
                               f"({limits.max_bytes:,} bytes)",
                               field="image", limit=limits.max_bytes)
        image, owned = _open(raw), True
    stored_w, stored_h = image.size
    _check_shape(stored_w, stored_h, limits)
    # EXIF is read only once the pixels are decoded (within the budget): asking a PNG for it
    # decodes the whole image first, to find an eXIf chunk that may follow the pixels.
    if owned and image.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale for free; keep >= 2x the resize target
        shorter = min(stored_w, stored_h)
        factor = max(1.0, shorter / (2 * RESIZE_SIZE))
        image.draft(image.mode if image.mode in ("L", "CMYK") else "RGB",
                    (math.ceil(stored_w / factor), math.ceil(stored_h / factor)))
    cost = decode_cost(image) if owned else 0
    if cost > limits.max_decode_bytes:
        raise InvalidInput(
            f"image is {stored_w}x{stored_h} pixels of mode {image.mode}: it needs "
            f"{cost / 2**20:.0f} MiB of memory to decode; the limit is "
            f"{limits.max_decode_bytes / 2**20:.0f} MiB. Send a smaller image (a JPEG of "
            "any size within the pixel limit fits)", field="image",
            limit=limits.max_decode_bytes)
    return _Opened(image, stored_w, stored_h, cost, owned)


def decode_cost(image: Image.Image) -> int:
    """Upper bound of the bytes decoding `image` (as opened, draft applied) will hold."""
    width, height = image.size
    pixels = width * height
    decoded = pixels * _BYTES_PER_PIXEL.get(image.mode, 4)
    if image.mode == "P" and "transparency" in image.info:
        decoded += pixels * 8  # to RGBA, then premultiplied
    elif image.mode in _CONVERSION:
        decoded += pixels * 4
    if image.format == "WEBP":  # libwebp decodes into a buffer that is then copied
        decoded += pixels * 4
    return decoded + (1 << 20)  # decoder state, the 224x224 results


def _open(raw: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (or raises) above its own global limit; ours is checked after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=FORMATS)
    except Image.DecompressionBombError:
        raise InvalidInput("image has too many pixels (decompression bomb?)",
                           field="image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidInput(f"not a supported image ({FORMAT_NAMES})", field="image") from None
    return image


def _check_shape(width: int, height: int, limits: DecodeLimits) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"image is {width}x{height} pixels", field="image")
    if width * height > limits.max_pixels:
        raise InvalidInput(f"image is {width}x{height} pixels; the limit is "
                           f"{limits.max_pixels} pixels", field="image",
                           limit=limits.max_pixels)
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise InvalidInput(f"image is {width}x{height} pixels, an aspect ratio of "
                           f"{aspect:.0f}:1; the limit is {limits.max_aspect:g}:1",
                           field="image", limit=limits.max_aspect)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not refuse a decodable image
        logger.info("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _load(opened: _Opened) -> Image.Image:
    image = opened.image
    if not opened.owned:
        return image
    try:
        image.seek(0)  # first frame of an animation
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"image data is corrupt or truncated: {exc}",
                           field="image") from None
    return image


def prepare(data: ImageInput, limits: DecodeLimits,
            budget: DecodeBudget | None = None) -> PreparedImage:
    """Decode one image and make the network's input: the per-request CPU work."""
    opened = open_image(data, limits)
    with budget.hold(opened.cost) if budget is not None and opened.owned else _nothing():
        image = _load(opened)
        orientation = _orientation(image)
        pixels = network_input(image, orientation)
    return PreparedImage(pixels, *opened.shown_size(orientation))


def preview(data: ImageInput, limits: DecodeLimits, budget: DecodeBudget | None = None,
            max_side: int = 1024) -> Image.Image:
    """The image as people see it (orientation applied, transparency on white), in RGB,
    at most `max_side` pixels on its longer side."""
    opened = open_image(data, limits)
    with budget.hold(opened.cost) if budget is not None and opened.owned else _nothing():
        image = _load(opened)  # a JPEG may have been decoded at a reduced scale
        orientation = _orientation(image)
        shown_w, shown_h = opened.shown_size(orientation)
        scale = min(1.0, max_side / max(shown_w, shown_h))
        size = (max(1, round(shown_w * scale)), max(1, round(shown_h * scale)))
        width, height = image.size
        if orientation in _SWAPS_AXES:
            width, height = height, width
        return _resample(image, orientation, (0.0, 0.0, float(width), float(height)), size)


def network_input(image: Image.Image, orientation: int = 1) -> np.ndarray:
    """The transform these weights were trained with, on the image as displayed: shorter
    side resized to 256 (bicubic), centre crop 224, (x - 127) / 128, channels first."""
    width, height = image.size
    if orientation in _SWAPS_AXES:
        width, height = height, width
    scale = RESIZE_SIZE / min(width, height)
    size = (max(RESIZE_SIZE, round(width * scale)), max(RESIZE_SIZE, round(height * scale)))
    left, top = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    sx, sy = width / size[0], height / size[1]
    box = (left * sx, top * sy, (left + IMAGE_SIZE) * sx, (top + IMAGE_SIZE) * sy)
    rgb = _resample(image, orientation, box, (IMAGE_SIZE, IMAGE_SIZE))
    array = (np.asarray(rgb, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _resample(image: Image.Image, orientation: int, box: tuple[float, float, float, float],
              size: tuple[int, int]) -> Image.Image:
    """`box` of the displayed image resampled to `size`, as 8-bit RGB: the box is mapped
    into the stored pixels, resampled there in their own format, then oriented."""
    stored_box = _stored_box(box, orientation, *image.size)
    stored_size = (size[1], size[0]) if orientation in _SWAPS_AXES else size
    extrema = image.getextrema() if image.mode in ("I", "F") else None
    target = _CONVERSION.get(image.mode)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA").convert("RGBa")
    elif target is not None:
        image = image.convert(target)
    small = image.resize(stored_size, Image.Resampling.BICUBIC, box=stored_box)
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    return _to_rgb(small, extrema)


def _stored_box(box: tuple[float, float, float, float], orientation: int, width: int,
                height: int) -> tuple[float, float, float, float]:
    """`box` in displayed coordinates as a box of the stored image (`width` x `height`)."""
    x0, y0, x1, y1 = box
    return {
        1: (x0, y0, x1, y1),
        2: (width - x1, y0, width - x0, y1),
        3: (width - x1, height - y1, width - x0, height - y0),
        4: (x0, height - y1, x1, height - y0),
        5: (y0, x0, y1, x1),
        6: (y0, height - x1, y1, height - x0),
        7: (width - y1, height - x1, width - y0, height - x0),
        8: (width - y1, x0, width - y0, x1),
    }[orientation]


def _to_rgb(image: Image.Image, extrema: object = None) -> Image.Image:
    """A small resampled image as 8-bit RGB: deep formats scaled, transparency on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float32)
        if mode.startswith("I;16"):
            top = 65535.0
        else:
            high = extrema[1] if isinstance(extrema, tuple) else float(array.max())
            top = max(float(high), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if mode in ("RGBa", "La"):  # premultiplied: over white is premultiplied + (1 - alpha)
        array = np.asarray(image, dtype=np.float32)
        colour = array[..., :3] if mode == "RGBa" else np.repeat(array[..., :1], 3, axis=2)
        rgb = colour + (255.0 - array[..., -1:])
        return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise InvalidInput(f"images of pixel format {mode} are not supported",
                           field="image") from None


@contextmanager
def _nothing() -> Iterator[None]:
    yield
