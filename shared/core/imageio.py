"""Loading images into the one array form the core works on: RGB ``uint8`` of shape (H, W, 3).

:func:`load_image` accepts encoded bytes, a file path or an array, honours the EXIF orientation,
flattens every Pillow mode to 8-bit RGB and refuses what it cannot use with a typed error
(:mod:`shared.errors`) carrying a message a user can act on.

Conversion choices, per Pillow mode:

* ``RGB`` as is; ``L`` and ``1`` are replicated to three channels.
* Alpha (``RGBA``, ``LA``, ``PA``, ``P`` with a transparency entry, ``La``/``RGBa``): the image
  is **composited on white**, ``out = (c * a + 255 * (255 - a)) / 255`` rounded. A transparent
  pixel has no colour of its own, and white is what a viewer or a printer shows behind it;
  compositing (rather than dropping alpha) keeps the hidden colours of fully transparent pixels
  — often black or garbage — from becoming clusters of their own.
* ``P`` without transparency, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: Pillow's
  conversion to RGB.
* ``I;16`` family (16-bit grey): ``value >> 8``, i.e. scaled by the format's bit range so a dark
  16-bit image stays dark.
* ``I`` (32-bit integer) and ``F`` (float): data already within 0..255 is used as is (rounded);
  data within 0..65535 is scaled like 16-bit (``/ 257``); anything else is stretched min–max
  to 0..255 (a constant image becomes 0). NaN becomes 0.
* Animated GIF / WebP / APNG: the first frame.

The pixel limit is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from kseg.shared.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = ["ImageSource", "load_image", "open_image", "pil_to_rgb", "resolve_max_pixels"]

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | np.ndarray

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def resolve_max_pixels(max_pixels: int | None) -> int:
    """The pixel limit to apply: ``max_pixels`` or the ``KSEG_MAX_IMAGE_PIXELS`` setting."""
    if max_pixels is not None:
        return int(max_pixels)
    from kseg.shared.settings import get_settings  # deferred: settings read the environment

    return get_settings().max_image_pixels


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise EmptyImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; scale it down first"
        )


def open_image(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    draft: bool = False,
    reduce_to: int | None = None,
) -> Image.Image:
    """Open, size-check and fully decode an image with Pillow (first frame, EXIF-oriented).

    Args:
        source: encoded image bytes, or a path to an image file.
        max_pixels: refuse images with more pixels than this (width × height of the header,
            checked before decoding); ``None`` uses the ``max_image_pixels`` setting.
        draft: let a JPEG decode at 1/8 scale (every byte is still read, so damage is still
            found): for validating an upload, not for segmenting it.
        reduce_to: let a JPEG decode at a reduced scale (1/2, 1/4 or 1/8) whose longer side
            is still at least this many pixels (Pillow's draft mode): for thumbnails.

    Returns:
        A loaded ``PIL.Image.Image`` in its file's mode, orientation applied.

    Raises:
        EmptyImageError, UnsupportedImageError, CorruptImageError, ImageTooLargeError.
        ``FileNotFoundError``/``IsADirectoryError``/``PermissionError`` for an unreadable path.
    """
    limit = resolve_max_pixels(max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = Path(source).read_bytes()
    if not data:
        raise EmptyImageError("the file is empty (0 bytes)")

    # A truncated file must fail loudly rather than decode with a grey tail; Pillow reads this
    # module flag at load time, so make sure no other import has switched it on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedImageError(
            "not an image format kseg can read (use PNG, JPEG, GIF, WebP, TIFF or BMP)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"the image has more pixels than kseg will decode (limit {limit:,}); "
            f"scale it down first ({exc})"
        ) from None
    except Exception as exc:  # a header Pillow recognises but cannot parse
        raise CorruptImageError(f"the image header is damaged: {exc}") from None

    _check_pixels(image.width, image.height, limit)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if draft and image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        elif reduce_to and image.format == "JPEG" and max(image.size) > reduce_to:
            scale = reduce_to / max(image.size)
            image.draft(
                image.mode,
                (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale))),
            )
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large to decode safely: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptImageError(
            f"the image is truncated or damaged and cannot be decoded ({exc})"
        ) from None
    return _exif_oriented(image)


@dataclass(frozen=True)
class ImageProbe:
    """What an upload is: its format and its size after EXIF orientation (pixels)."""

    format: str
    content_type: str
    width: int
    height: int


def probe_image(data: bytes, *, max_pixels: int | None = None) -> ImageProbe:
    """Check that ``data`` decodes — cheaply (a JPEG at 1/8 scale) — and describe it.

    Raises the same typed errors as :func:`load_image`.
    """
    open_image(data, max_pixels=max_pixels, draft=True)  # the typed errors come from here
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
        try:
            orientation = header.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:
            orientation = 1  # unreadable EXIF: kept as stored, as _exif_oriented does
        fmt = (header.format or "unknown").upper()
        mime = header.get_format_mimetype() or "application/octet-stream"
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
        width, height = height, width
    return ImageProbe(format=fmt, content_type=mime, width=width, height=height)


def _exif_oriented(image: Image.Image) -> Image.Image:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return image  # unreadable EXIF is metadata damage, not image damage: keep as stored
    if orientation not in range(2, 9):
        return image
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception:
        return image
    return transposed if transposed is not None else image


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours and ``(H, W)`` uint8 alpha -> colours over white, uint8."""
    a = alpha.astype(np.uint16)[..., None]
    out = rgb.astype(np.uint16) * a
    out += (255 - a) * 255
    out += 127  # round half up on the division below
    out //= 255
    return out.astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, *, bits16: bool) -> np.ndarray:
    if bits16:
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 255.0:
        scaled = data
    elif lo >= 0.0 and hi <= 65535.0:
        scaled = data / 257.0
    elif hi > lo:
        scaled = (data - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(data)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image of any mode -> C-contiguous ``(H, W, 3)`` uint8 RGB.

    See the module docstring for how each mode is converted.
    """
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode in ("L", "1"):
        return _grey_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    if mode in _GREY16_MODES:
        return _grey_to_rgb(_scale_to_uint8(np.asarray(image), bits16=True))
    if mode in ("I", "F"):
        return _grey_to_rgb(_scale_to_uint8(np.asarray(image), bits16=False))
    try:
        converted = image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnsupportedImageError(f"images of Pillow mode {mode!r} are not supported") from exc
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))


def array_to_rgb(array: np.ndarray, *, max_pixels: int | None = None) -> np.ndarray:
    """An in-memory image -> ``(H, W, 3)`` uint8 RGB.

    Accepts ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (composited on white);
    ``uint8`` as is, ``bool`` as 0/255, floats in 0..1 scaled by 255.
    """
    limit = resolve_max_pixels(max_pixels)
    arr = np.asarray(array)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UnsupportedImageError(
            f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}"
        )
    height, width = arr.shape[:2]
    _check_pixels(width, height, limit)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise UnsupportedImageError("a float image array must hold values in 0..1")
        arr = np.rint(arr * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise UnsupportedImageError(f"image arrays must be uint8, bool or float, not {arr.dtype}")
    if arr.ndim == 2:
        return _grey_to_rgb(arr)
    if arr.shape[2] == 4:
        return _composite_on_white(arr[..., :3], arr[..., 3])
    return np.ascontiguousarray(arr)


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image to RGB.

    Args:
        source: encoded bytes, a path, or an array (see :func:`array_to_rgb`).
        max_pixels: pixel limit (width × height), checked before decoding; ``None`` uses the
            ``KSEG_MAX_IMAGE_PIXELS`` setting (50 MP by default).

    Returns:
        C-contiguous ``(H, W, 3)`` uint8 RGB after EXIF orientation; H, W ≥ 1.

    Raises:
        EmptyImageError: zero bytes or zero pixels.
        UnsupportedImageError: not an image (or an unsupported mode / array).
        CorruptImageError: identified as an image but truncated or damaged.
        ImageTooLargeError: over the pixel limit (or a Pillow decompression bomb).
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels=max_pixels)
    image = open_image(source, max_pixels=max_pixels)
    try:
        return pil_to_rgb(image)
    except ImageError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptImageError(f"the image cannot be converted to RGB ({exc})") from None
