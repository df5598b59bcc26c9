"""Decoding untrusted images: every format and pixel mode, the network's crop, EXIF
orientation, and the bounds that keep a small file from costing gigabytes."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from benchmarks.redteam import png
from ml.decoding import (
    DecodeBudget,
    DecodeLimits,
    network_input,
    open_image,
    prepare,
    preview,
)
from ml.errors import InvalidInput, Overloaded
from tests.conftest import encoded, photo

LIMITS = DecodeLimits()
WHOLE = 10**6  # a preview size larger than any test image: no resampling


def png_header_only(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A tiny PNG claiming a huge size: what a decompression bomb looks like to a decoder."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def old_network_input(image: Image.Image) -> np.ndarray:
    """The reference transform, done the obvious way: resize the whole image, then crop."""
    width, height = image.size
    scale = 256 / min(width, height)
    size = (max(256, round(width * scale)), max(256, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    return ((np.asarray(image, dtype=np.float32) - 127.0) / 128.0).transpose(2, 0, 1)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_the_crop_is_resampled_exactly_as_resize_then_crop(name: str) -> None:
    image = photo(name)
    assert np.abs(network_input(image) - old_network_input(image)).max() <= 1 / 128 + 1e-6


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied_to_the_crop_not_the_image(orientation: int) -> None:
    stored = photo("coffee")  # 600x400, asymmetric content
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(stored, "PNG", exif=exif)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    expected = old_network_input(shown.convert("RGB"))
    prepared = prepare(data, LIMITS)
    assert (prepared.width, prepared.height) == shown.size
    levels = np.abs(prepared.pixels - expected) * 128  # in 8-bit levels
    # Rotations swap the order of Pillow's two resampling passes (each rounds to 8 bits):
    # a level here and there, a few more on one pixel in several thousand.
    assert levels.mean() < 0.5 and levels.max() <= 8 and (levels > 2).mean() < 1e-3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_decodes(fmt: str) -> None:
    out = preview(encoded(photo("coffee"), fmt), LIMITS, max_side=WHOLE)
    assert out.mode == "RGB" and out.size == (600, 400)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_pixel_mode_becomes_rgb(mode: str) -> None:
    source = photo("coffee").convert("L" if mode in ("I;16", "I", "F") else "RGB")
    image = source.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(source, dtype=np.uint16) * 257)
    out = preview(image, LIMITS, max_side=WHOLE)
    assert out.mode == "RGB" and out.size == source.size
    assert np.asarray(out).std() > 10, "image came out blank"
    assert network_input(image).std() > 0.05


def test_sixteen_bit_png_keeps_its_contrast() -> None:
    grey = np.asarray(photo("coffee").convert("L"), dtype=np.uint16) * 257
    data = encoded(Image.fromarray(grey))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = np.asarray(preview(data, LIMITS, max_side=WHOLE))
    assert abs(int(rgb.max()) - int(grey.max() // 257)) <= 1


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(preview(image, LIMITS, max_side=WHOLE)).min() == 255
    half = Image.new("RGBA", (300, 300), (0, 0, 0, 128))  # half-transparent black: grey
    assert abs(float(network_input(half).mean()) * 128 + 127 - 127) <= 2


def test_exif_orientation_is_honoured_in_the_preview() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded(photo("coffee"), "JPEG", exif=exif)  # stored 600x400
    assert preview(data, LIMITS, max_side=WHOLE).size == (400, 600)
    assert preview(data, LIMITS, max_side=300).size == (200, 300)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = preview(buffer.getvalue(), LIMITS, max_side=WHOLE)
    assert tuple(np.asarray(out)[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(("data", "fragment"), [
    pytest.param(png_header_only(25, 100_000), "aspect ratio of 4000:1", id="25x100000"),
    pytest.param(png_header_only(1, 40_000_000), "aspect ratio", id="1x40000000"),
    pytest.param(png_header_only(100_000, 100_000), "pixels", id="10-gigapixel"),
    pytest.param(png_header_only(6000, 6000, depth=16, colour=0), "MiB of memory",
                 id="36-megapixel-16-bit"),
    pytest.param(png_header_only(6000, 6000), "MiB of memory", id="36-megapixel-rgb-png"),
    pytest.param(png_header_only(6000, 6000, depth=1, colour=0), "MiB of memory",
                 id="36-megapixel-1-bit"),  # 1 byte a pixel decoded, 1 more to resample
])
def test_images_too_costly_to_decode_are_refused_from_their_header(data: bytes,
                                                                    fragment: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        prepare(data, LIMITS)
    assert fragment in caught.value.message
    assert caught.value.field == "image"
    assert time.perf_counter() - started < 0.5  # refused from the header, nothing decoded


def test_a_real_costly_png_is_refused_without_being_decoded() -> None:
    """Asking a PNG for its EXIF decodes it all (an eXIf chunk may follow the pixels):
    orientation is read only after the cost check and inside the budget."""
    data = png(6400, 6250, colour=6)  # a real 40 Mpx RGBA file of ~160 KB: 160 MB decoded
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="MiB of memory"):
        prepare(data, LIMITS)
    assert time.perf_counter() - started < 0.3  # decoding it takes seconds


def test_float_tiff_cost_counts_four_bytes_a_pixel() -> None:
    data = encoded(Image.new("F", (1000, 1000), 0.5), "TIFF")
    assert open_image(data, LIMITS).cost >= 4_000_000
    with pytest.raises(InvalidInput, match="MiB of memory"):
        prepare(data, DecodeLimits(max_decode_bytes=2 << 20))
    assert prepare(data, LIMITS).pixels.shape == (3, 224, 224)


def test_a_large_jpeg_decodes_at_a_reduced_scale() -> None:
    gradient = np.linspace(0, 255, 4000, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(gradient, (3000, 1))] * 3, axis=2))
    data = encoded(image, "JPEG", quality=80)
    opened = open_image(data, LIMITS)
    assert opened.cost < 8 << 20  # a full decode would hold 48 MB
    prepared = prepare(data, DecodeLimits(max_decode_bytes=8 << 20))
    assert (prepared.width, prepared.height) == (4000, 3000)
    shown = np.asarray(preview(data, DecodeLimits(max_decode_bytes=8 << 20), max_side=400))
    assert shown.shape == (300, 400, 3)
    assert abs(int(shown[150, 200, 0]) - 128) < 8  # the whole gradient, not a corner of it


def test_concurrent_decodes_never_hold_more_than_the_budget() -> None:
    data = encoded(photo("astronaut"), "PNG")  # 512x512: ~2 MB to decode
    cost = open_image(data, LIMITS).cost
    budget = DecodeBudget(int(cost * 2.5))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                prepare(data, LIMITS, budget)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert cost * 2 <= budget.peak <= budget.total  # two fit at once, never a third
    assert budget.in_use == 0


def test_a_decode_that_cannot_get_room_is_refused_as_overloaded() -> None:
    budget = DecodeBudget(100, wait_s=0.2)
    held = threading.Event()
    release = threading.Event()

    def hog() -> None:
        with budget.hold(80):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hog)
    thread.start()
    assert held.wait(5)
    with pytest.raises(Overloaded):
        with budget.hold(40):
            pass
    release.set()
    thread.join(5)
    with budget.hold(40):  # room again once the first is done
        assert budget.in_use == 40


def test_too_many_pixels_in_a_pil_image() -> None:
    with pytest.raises(InvalidInput):
        prepare(Image.new("L", (100, 100)), DecodeLimits(max_pixels=9999))
