"""Thumbnails: small WebP previews of an original or of an output, for the pages' tiles.

A page that shows a 72 px tile should not download a 12 MP photo or an 800 KB PNG. A
thumbnail fits in a square of one of :data:`THUMBNAIL_SIZES` pixels (aspect kept, never
enlarged), made with Pillow's :meth:`PIL.Image.Image.thumbnail` (a JPEG is decoded at a
reduced scale first, so a phone photo costs a fraction of a full decode) and encoded as lossy
WebP, which every current browser shows.

* Originals are oriented by their EXIF tag and flattened as the core reads them for
  clustering (:func:`kseg.shared.core.imageio.pil_to_rgb`: alpha composited on white, 16-bit
  scaled), so a thumbnail shows what was segmented.
* The ``labels`` output is a machine-readable index map (pixel = label, 0..k-1: nearly black
  to the eye). Its thumbnail is the map shrunk by nearest neighbour (labels are not blended)
  and painted with the ``color`` output's palette, so a tile shows the regions.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kseg.shared.core.imageio import open_image, pil_to_rgb
from kseg.shared.core.render import render_color

__all__ = ["THUMBNAIL_SIZES", "WEBP_QUALITY", "Thumbnail", "make_thumbnail"]

#: The long sides made, px: 160 for the 56–72 px tiles of lists (history, runs) at 2x pixel
#: density, 480 for the grids' 150–240 px tiles (galleries, a job's outputs) at 2x.
THUMBNAIL_SIZES = (160, 480)
#: Lossy WebP quality: at 480 px a photo's thumbnail is ~15–30 KB, a flat output's ~5 KB.
WEBP_QUALITY = 80
CONTENT_TYPE = "image/webp"


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int
    content_type: str = CONTENT_TYPE


def make_thumbnail(
    data: bytes, size: int, *, label_map: bool = False, max_pixels: int | None = None
) -> Thumbnail:
    """A WebP thumbnail of the encoded image ``data`` whose longer side is at most ``size``.

    ``label_map``: ``data`` is a ``labels`` output (see the module docstring). Raises the typed
    errors of :func:`kseg.shared.core.imageio.open_image` for data that is not an image.
    """
    if size < 1:
        raise ValueError(f"a thumbnail size must be positive, not {size}")
    # The decode may stop at a scale twice the target: thumbnail() then shrinks the rest
    # with a proper filter (its reducing_gap), which is as sharp as from the full image.
    image = open_image(data, max_pixels=max_pixels, reduce_to=None if label_map else 2 * size)
    if label_map:
        labels = image.convert("L") if image.mode != "L" else image
        labels.thumbnail((size, size), Image.Resampling.NEAREST)
        image = Image.fromarray(render_color(np.asarray(labels, dtype=np.uint8)))
    else:
        if image.mode not in ("RGB", "L"):
            image = Image.fromarray(pil_to_rgb(image))
        image.thumbnail((size, size))
        if image.mode != "RGB":
            image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=WEBP_QUALITY)
    return Thumbnail(out.getvalue(), image.width, image.height)
