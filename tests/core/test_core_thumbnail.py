"""Thumbnails: small WebP previews, oriented and flattened as the core reads images, never
enlarged; a label map's thumbnail shows its regions in colour."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from conftest import encode, gradient_rgb
from PIL import Image

from kseg.shared.core import render
from kseg.shared.core.thumbnail import THUMBNAIL_SIZES, make_thumbnail
from kseg.shared.errors import UnsupportedImageError


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("size", THUMBNAIL_SIZES)
def test_a_photo_shrinks_to_fit_the_size_keeping_its_shape(size: int) -> None:
    photo = encode(Image.fromarray(gradient_rgb(1200, 1600)), "JPEG", quality=90)
    thumb = make_thumbnail(photo, size)
    image = decode(thumb.data)
    assert image.format == "WEBP" and thumb.content_type == "image/webp"
    assert image.size == (thumb.width, thumb.height) == (size, size * 3 // 4)
    assert len(thumb.data) < len(photo) / 10


def test_a_small_image_is_not_enlarged() -> None:
    thumb = make_thumbnail(encode(Image.fromarray(gradient_rgb(30, 40))), 160)
    assert (thumb.width, thumb.height) == (40, 30)


def test_colours_survive() -> None:
    """A flat two-colour image stays those colours (lossy WebP: within a few levels)."""
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[:, :200] = (200, 40, 30)
    rgb[:, 200:] = (20, 90, 220)
    small = np.asarray(decode(make_thumbnail(encode(Image.fromarray(rgb)), 160).data))
    assert np.abs(small[60, 20].astype(int) - (200, 40, 30)).max() <= 8
    assert np.abs(small[60, 140].astype(int) - (20, 90, 220)).max() <= 8


def test_exif_orientation_is_applied() -> None:
    """Stored 400x300 with "rotate 90": shown 300 wide and 400 tall, as the core reads it."""
    image = Image.fromarray(gradient_rgb(300, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    thumb = make_thumbnail(encode(image, "JPEG", exif=exif.tobytes()), 160)
    assert (thumb.width, thumb.height) == (120, 160)


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
    small = np.asarray(decode(make_thumbnail(encode(Image.fromarray(rgba, "RGBA")), 160).data))
    assert small.min() >= 245  # white, as the core clusters it


def test_sixteen_bit_grey_is_shown() -> None:
    grey = np.arange(64 * 64, dtype="<u2").reshape(64, 64) * 16
    thumb = make_thumbnail(encode(Image.frombytes("I;16", (64, 64), grey.tobytes())), 160)
    small = np.asarray(decode(thumb.data))
    assert small.shape == (64, 64, 3) and small.max() > 200 and small.min() < 30


def test_a_label_map_is_painted_in_its_colour_palette() -> None:
    labels = np.zeros((200, 300), np.uint8)
    labels[:, 100:200] = 1
    labels[:, 200:] = 2
    thumb = make_thumbnail(render.encode_png(labels), 150, label_map=True)
    small = np.asarray(decode(thumb.data)).astype(int)
    assert (thumb.width, thumb.height) == (150, 100)
    for x, label in ((20, 0), (75, 1), (130, 2)):
        expected = render.LABEL2RGB_COLORS[label]
        assert np.abs(small[50, x] - expected).max() <= 12, (x, small[50, x], expected)


def test_a_big_jpeg_is_decoded_at_a_reduced_scale() -> None:
    """A 12 MP photo: a fraction of a full decode (Pillow's JPEG draft mode)."""
    photo = encode(Image.fromarray(gradient_rgb(3000, 4000)), "JPEG", quality=90)
    start = time.perf_counter()
    full = Image.open(io.BytesIO(photo))
    full.load()
    full_decode = time.perf_counter() - start
    start = time.perf_counter()
    thumb = make_thumbnail(photo, 160)
    took = time.perf_counter() - start
    assert (thumb.width, thumb.height) == (160, 120)
    assert took < full_decode, (took, full_decode)


def test_not_an_image_is_refused() -> None:
    with pytest.raises(UnsupportedImageError):
        make_thumbnail(b"hello, world", 160)
    with pytest.raises(ValueError):
        make_thumbnail(encode(Image.new("RGB", (4, 4))), 0)
