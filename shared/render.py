"""The result images of a segmentation, and their PNG encoding.

Every renderer takes the ``(H, W)`` uint8 label map (label 0 = largest cluster) and returns a
full-size uint8 array; each paints through a per-label lookup table, so the cost is one
gather over the pixels whatever k is.

* ``labels``  — mode L, pixel = label.
* ``gray``    — mode L, label ``i`` drawn as ``int(256 / (i + 1)) - 1`` (the tutorial's).
* ``color``   — mode RGB, the colours ``skimage.color.label2rgb(labels, bg_label=-1)`` paints
  (its default 10-colour cycle, label ``i`` -> colour ``i % 10``), rounded to 8 bits.
* ``recolor`` — mode RGB, each pixel its cluster's centre colour.
* ``overlay`` — mode RGB, the original with yellow (255, 255, 0) on every pixel that has a
  4-neighbour of another label: ``skimage.segmentation.mark_boundaries(image, labels,
  mode="thick")``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

__all__ = [
    "LABEL2RGB_COLORS",
    "PNG_COMPRESS_LEVEL",
    "boundaries",
    "encode_png",
    "gray_levels",
    "render",
    "render_color",
    "render_gray",
    "render_labels",
    "render_outputs",
    "render_overlay",
    "render_recolor",
]

#: zlib level of every PNG. Level 1 encodes a 12 MP RGB image ~4× faster than Pillow's
#: default 6 for files ~10–25 % larger (measured, bench/README.md).
PNG_COMPRESS_LEVEL = 1

#: ``skimage.color.label2rgb``'s default colour cycle ("red", "blue", "yellow", "magenta",
#: "green", "indigo", "darkorange", "cyan", "pink", "yellowgreen") as 8-bit RGB, rounded.
#: Kept literal so rendering needs no scikit-image import; a test checks it against skimage.
LABEL2RGB_COLORS = np.array(
    [
        [255, 0, 0],
        [0, 0, 255],
        [255, 255, 0],
        [255, 0, 255],
        [0, 128, 0],
        [75, 0, 130],
        [255, 140, 0],
        [0, 255, 255],
        [255, 192, 203],
        [154, 205, 50],
    ],
    dtype=np.uint8,
)

BOUNDARY_COLOR = np.array([255, 255, 0], dtype=np.uint8)


def gray_levels(n: int = 256) -> np.ndarray:
    """``(n,)`` uint8 grey of labels ``0..n-1``: ``int(256 / (i + 1)) - 1`` (255, 127, 84, …)."""
    i = np.arange(n)
    return (256 // (i + 1) - 1).astype(np.uint8)


def render_labels(labels: np.ndarray) -> np.ndarray:
    """The label map itself, ``(H, W)`` uint8."""
    return np.ascontiguousarray(labels, dtype=np.uint8)


def render_gray(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 visible greys (:func:`gray_levels`)."""
    return gray_levels()[labels]


def render_color(labels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: label ``i`` in ``label2rgb``'s colour ``i % 10``.

    ``label2rgb`` cycles its colours over the labels present in increasing order; every
    label ``0..k-1`` is present (no cluster is empty), so label ``i`` gets colour ``i % 10``.
    """
    palette = LABEL2RGB_COLORS[np.arange(256) % len(LABEL2RGB_COLORS)]
    return palette[labels]


def render_recolor(labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: each pixel replaced by ``centers[label]`` (``(k, 3)`` uint8 RGB)."""
    return np.take(np.asarray(centers, dtype=np.uint8), labels, axis=0)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels with a 4-neighbour of a different label.

    Equals ``skimage.segmentation.find_boundaries(labels, mode="thick")`` (dilation differs
    from erosion by the cross-shaped footprint), computed by comparing shifted views.
    """
    edge = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    vertical = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def render_overlay(labels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: a copy of the original ``rgb`` with boundaries in yellow."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[boundaries(labels)] = BOUNDARY_COLOR
    return out


def render(name: str, labels: np.ndarray, centers: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """One output by name ("labels", "gray", "color", "recolor", "overlay") as a uint8 array."""
    if name == "labels":
        return render_labels(labels)
    if name == "gray":
        return render_gray(labels)
    if name == "color":
        return render_color(labels)
    if name == "recolor":
        return render_recolor(labels, centers)
    if name == "overlay":
        return render_overlay(labels, rgb)
    raise ValueError(f"unknown output {name!r}")


def encode_png(pixels: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """``(H, W)`` (mode L) or ``(H, W, 3)`` (mode RGB) uint8 array -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def render_outputs(
    names: Iterable[str],
    labels: np.ndarray,
    centers: np.ndarray,
    rgb: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
    workers: int = 2,
) -> dict[str, bytes]:
    """Render and PNG-encode the named outputs; ``{name: png_bytes}`` in the order given.

    Pillow's zlib encoder releases the GIL, so outputs are encoded on ``workers`` threads;
    each output's array is rendered inside its own task and dropped after encoding, which
    keeps at most ``workers`` full-size renders alive at once.
    """
    names = list(names)

    def job(name: str) -> bytes:
        return encode_png(render(name, labels, centers, rgb))

    result: dict[str, bytes] = {}
    if workers <= 1 or len(names) <= 1:
        for i, name in enumerate(names):
            result[name] = job(name)
            if progress is not None:
                progress((i + 1) / len(names))
        return result
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kseg-png") as pool:
        futures = [pool.submit(job, name) for name in names]
        for i, (name, future) in enumerate(zip(names, futures, strict=True)):
            result[name] = future.result()
            if progress is not None:
                progress((i + 1) / len(names))
    return result
