"""Loading: every Pillow mode to RGB uint8, EXIF orientation, and typed refusals."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import encode, gradient_rgb
from PIL import Image, ImageFile

from kseg.shared.core.imageio import load_image
from kseg.shared.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)


def check_rgb(arr: np.ndarray, size: tuple[int, int]) -> None:
    width, height = size
    assert arr.dtype == np.uint8
    assert arr.shape == (height, width, 3)
    assert arr.flags["C_CONTIGUOUS"]


def test_rgb_png_roundtrip(small_rgb: np.ndarray) -> None:
    out = load_image(encode(Image.fromarray(small_rgb)))
    np.testing.assert_array_equal(out, small_rgb)


def test_path_and_bytes_agree(tmp_path, small_rgb: np.ndarray) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(small_rgb).save(path)
    np.testing.assert_array_equal(load_image(path), load_image(path.read_bytes()))
    np.testing.assert_array_equal(load_image(str(path)), small_rgb)


def test_mode_L_replicated() -> None:
    grey = np.arange(40, dtype=np.uint8).reshape(5, 8) * 6
    out = load_image(encode(Image.fromarray(grey, "L")))
    check_rgb(out, (8, 5))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_mode_1() -> None:
    bits = np.zeros((4, 6), dtype=bool)
    bits[:, :3] = True
    out = load_image(encode(Image.fromarray(bits).convert("1")))
    check_rgb(out, (6, 4))
    assert set(np.unique(out).tolist()) == {0, 255}
    assert (out[:, :3] == 255).all() and (out[:, 3:] == 0).all()


def test_mode_LA_composited_on_white() -> None:
    la = Image.new("LA", (3, 1))
    la.putdata([(0, 255), (0, 0), (100, 128)])
    out = load_image(encode(la))
    check_rgb(out, (3, 1))
    assert out[0, 0].tolist() == [0, 0, 0]  # opaque black stays black
    assert out[0, 1].tolist() == [255, 255, 255]  # transparent -> white
    expected = round((100 * 128 + 255 * 127) / 255)
    assert out[0, 2].tolist() == [expected] * 3


def test_mode_RGBA_composited_on_white() -> None:
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 200, 0, 51]]], dtype=np.uint8)
    out = load_image(encode(Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    g = round((200 * 51 + 255 * 204) / 255)
    w = round(255 * 204 / 255)
    assert out[0, 2].tolist() == [w, g, w]


def test_mode_P_without_transparency(small_rgb: np.ndarray) -> None:
    pal = Image.fromarray(small_rgb).quantize(8)
    assert pal.mode == "P"
    out = load_image(encode(pal))
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))


def test_mode_P_with_transparency() -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    pal.putdata([0, 1])
    data = encode(pal, transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    out = load_image(data)
    assert out[0, 0].tolist() == [255, 255, 255]  # the transparent index -> white
    assert out[0, 1].tolist() == [200, 0, 0]


def test_mode_CMYK() -> None:
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # no black, full magenta+yellow = red
    out = load_image(encode(cmyk, "JPEG", quality=100))
    check_rgb(out, (4, 3))
    r, g, b = out[1, 1].tolist()
    assert r > 200 and g < 60 and b < 60


def test_mode_I16_scaled_by_bit_range() -> None:
    values = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    data = encode(img)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_image(data)
    assert out[0, :, 0].tolist() == [0, 0, 1, 255]


def test_mode_I_values_within_8_bit_kept() -> None:
    values = np.array([[0, 17, 255]], dtype=np.int32)
    out = load_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert out[0, :, 1].tolist() == [0, 17, 255]


def test_mode_I_wide_range_min_max() -> None:
    values = np.array([[-1000, 0, 1000]], dtype=np.int32)
    out = load_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_mode_F() -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = load_image(encode(Image.fromarray(values, "F"), "TIFF"))
    assert out[0, :, 2].tolist() == [0, 0, 1]  # 0..255 data is taken as is (rounded)


def _frames(colors: list[tuple[int, int, int]]) -> list[Image.Image]:
    return [Image.new("RGB", (6, 4), c) for c in colors]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_first_frame(fmt: str) -> None:
    frames = _frames([(255, 0, 0), (0, 0, 255), (0, 255, 0)])
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = load_image(data)
    check_rgb(out, (6, 4))
    assert out[2, 3].tolist() == [255, 0, 0]


def test_exif_orientation_6_transposes() -> None:
    img = Image.fromarray(gradient_rgb(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    check_rgb(out, (20, 40))  # stored 40 wide x 20 high, shown 20 wide x 40 high


def test_one_by_one() -> None:
    out = load_image(encode(Image.new("RGB", (1, 1), (1, 2, 3))))
    assert out.shape == (1, 1, 3) and out[0, 0].tolist() == [1, 2, 3]


def test_empty_bytes() -> None:
    with pytest.raises(EmptyImageError):
        load_image(b"")


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(EmptyImageError):
        load_image(path)


def test_not_an_image() -> None:
    with pytest.raises(UnsupportedImageError, match="not an image"):
        load_image(b"hello, this is plain text and not a picture\n" * 10)


def test_truncated_jpeg(small_rgb: np.ndarray) -> None:
    data = encode(Image.fromarray(gradient_rgb(64, 64)), "JPEG", quality=95)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(CorruptImageError):
        load_image(data[: len(data) // 2])


def test_truncated_jpeg_refused_even_if_flag_was_switched_on() -> None:
    data = encode(Image.fromarray(gradient_rgb(64, 64)), "JPEG", quality=95)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(CorruptImageError):
            load_image(data[: len(data) // 2])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height``, and an empty IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding() -> None:
    # 20000 x 20000 = 400 MP; decoding it would need 1.2 GB. The header has no pixel data at
    # all, so only a refusal from the header can raise ImageTooLargeError (decoding would
    # raise CorruptImageError).
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(20000, 20000), max_pixels=50_000_000)


def test_over_our_limit_below_pillows_refused_from_header() -> None:
    with pytest.raises(ImageTooLargeError, match="8000x7000 = 56,000,000"):
        load_image(_png_header_only(8000, 7000), max_pixels=50_000_000)
    with pytest.raises(CorruptImageError):  # allowed size: it gets decoded, and fails
        load_image(_png_header_only(8000, 7000), max_pixels=60_000_000)


def test_pillow_bomb_error_converted() -> None:
    # Above Pillow's own hard limit: Pillow refuses at open, and that becomes our error.
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(30000, 30000), max_pixels=10**10)


def test_pixel_limit_configurable(small_png: bytes) -> None:
    assert load_image(small_png, max_pixels=24 * 32).shape == (24, 32, 3)
    with pytest.raises(ImageTooLargeError):
        load_image(small_png, max_pixels=24 * 32 - 1)


def test_pixel_limit_from_settings(monkeypatch, small_png: bytes) -> None:
    from kseg.shared import settings

    monkeypatch.setenv("KSEG_MAX_IMAGE_PIXELS", "100")
    settings.get_settings.cache_clear()
    try:
        with pytest.raises(ImageTooLargeError):
            load_image(small_png)
    finally:
        monkeypatch.delenv("KSEG_MAX_IMAGE_PIXELS")
        settings.get_settings.cache_clear()
    assert load_image(small_png).shape == (24, 32, 3)


def test_array_passthrough(small_rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(load_image(small_rgb), small_rgb)
    grey = small_rgb[..., 0]
    assert load_image(grey).shape == (24, 32, 3)
    with pytest.raises(UnsupportedImageError):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(EmptyImageError):
        load_image(np.zeros((0, 4, 3), dtype=np.uint8))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_probe_matches_the_decoded_size_and_format(orientation: int) -> None:
    from kseg.shared.core.imageio import probe_image

    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    probe = probe_image(buf.getvalue())
    h, w = load_image(buf.getvalue()).shape[:2]
    assert (probe.width, probe.height) == (w, h)
    assert (probe.format, probe.content_type) == ("JPEG", "image/jpeg")


def test_probe_refuses_a_truncated_jpeg_although_it_decodes_in_draft() -> None:
    from kseg.shared.core.imageio import probe_image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(CorruptImageError):
        probe_image(buf.getvalue()[:-100])
