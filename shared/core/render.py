"""The result images of a segmentation, and their PNG encoding.

Every renderer takes the ``(H, W)`` uint8 label map (label 0 = largest cluster) and returns a
full-size uint8 array; each paints through a per-label lookup table, so the cost is one
gather over the pixels whatever k is.

* ``labels``  — mode L, pixel = label.
* ``gray``    — mode L, label ``i`` drawn as ``int(256 / (i + 1)) - 1`` (the tutorial's).
* ``color``   — palette PNG (decodes to RGB), the colours
  ``skimage.color.label2rgb(labels, bg_label=-1)`` paints (its default 10-colour cycle,
  label ``i`` -> colour ``i % 10``), rounded to 8 bits.
* ``recolor`` — palette PNG (decodes to RGB), each pixel its cluster's centre colour.
* ``overlay`` — mode RGB, the original with yellow (255, 255, 0) on every pixel that has a
  4-neighbour of another label: ``skimage.segmentation.mark_boundaries(image, labels,
  mode="thick")``.
"""

from __future__ import annotations

import os
import struct
import threading
import types
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

_deflate_lib: types.ModuleType
try:
    # zlib-ng: the same DEFLATE streams (any zlib decodes them), made 1.5-2.3x faster at
    # level 1 with run-length matching (measured on 1 MP outputs: bench/README.md).
    from zlib_ng import zlib_ng as _deflate_lib
except ImportError:  # pragma: no cover - a declared dependency; the stdlib is the fallback
    _deflate_lib = zlib

__all__ = [
    "LABEL2RGB_COLORS",
    "PNG_COMPRESS_LEVEL",
    "assemble_png",
    "boundaries",
    "deflate_scanlines",
    "encode_png",
    "gray_levels",
    "render",
    "render_color",
    "render_gray",
    "render_labels",
    "render_outputs",
    "render_overlay",
    "render_recolor",
    "split_png",
]

#: zlib level of every PNG: the fastest. At 12 MP level 6 takes 2–3× as long for files
#: 10–30 % smaller (measured, bench/README.md).
PNG_COMPRESS_LEVEL = 1
#: zlib strategy of every PNG: run-length matching. On the label maps and the photographic
#: overlay it is as fast as the default LZ77 matching or faster, and the files are smaller
#: (the same label map: 72 KB against 107 KB at 1 MP).
PNG_STRATEGY = zlib.Z_RLE

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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    # Flat indices: a boolean (H, W) mask over an (H, W, 3) array is ~2× slower (measured).
    out.reshape(-1, 3)[np.flatnonzero(boundaries(labels))] = BOUNDARY_COLOR
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


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _up_filtered(pixels: np.ndarray) -> np.ndarray:
    """PNG scanlines with filter type 2 ("Up"): ``(H, 1 + W*C)`` uint8, row − previous row.

    Label-like images (long runs, repeated rows) become mostly zeros that zlib's fastest
    level squeezes well, and the filter is one vectorised subtraction; Pillow's per-row
    adaptive filtering costs more than the compression itself at 12 MP (measured).
    """
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    out = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 2
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps mod 256
    return out


def deflate_scanlines(
    pixels: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL, strategy: int = PNG_STRATEGY
) -> bytes:
    """The IDAT payload of ``(H, W)`` or ``(H, W, 3)`` uint8 pixels: Up-filtered scanlines
    (:func:`_up_filtered`), deflated. The deflate releases the GIL."""
    packer = _deflate_lib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
    return packer.compress(_up_filtered(np.ascontiguousarray(pixels, dtype=np.uint8))) + (
        packer.flush()
    )


def assemble_png(
    width: int, height: int, color_type: int, idat: bytes, palette: np.ndarray | None = None
) -> bytes:
    """PNG bytes from a deflated IDAT payload: signature, IHDR, [PLTE,] IDAT, IEND.

    ``color_type`` 0 (grey), 2 (RGB) or 3 (palette, with ``palette`` an ``(n, 3)`` uint8
    table); 8 bits per sample, no interlace.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    chunks = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_png_chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()))
    chunks += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"".join(chunks)


def split_png(png: bytes) -> tuple[bytes, bytes]:
    """``(head, body)`` of PNG bytes: everything before the first IDAT chunk (signature,
    IHDR, PLTE, …) and everything from it on (the image data and IEND); ``head + body`` is
    ``png``. PNGs that differ only in their header or palette have equal bodies.

    Raises ``ValueError`` for bytes that are not a PNG with image data.
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        if kind == b"IDAT":
            return png[:pos], png[pos:]
        pos += 12 + length  # length, type, data, CRC
    raise ValueError("a PNG without image data (IDAT)")


def encode_png(
    pixels: np.ndarray,
    *,
    palette: np.ndarray | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    strategy: int = PNG_STRATEGY,
) -> bytes:
    """``(H, W)`` (grey) or ``(H, W, 3)`` (RGB) uint8 array -> 8-bit PNG bytes.

    With ``palette`` (``(n, 3)`` uint8 RGB, n ≤ 256), ``pixels`` is an ``(H, W)`` array of
    indices into it and the PNG is palette-based: it decodes to exactly ``palette[pixels]``
    with a third of the data to filter and deflate.

    A plain, standard PNG (IHDR, [PLTE,] one IDAT, IEND; no interlace) written directly:
    every scanline "Up"-filtered (:func:`_up_filtered`) and deflated at ``compress_level``
    with zlib ``strategy`` (:func:`deflate_scanlines`, :func:`assemble_png`).
    """
    pixels = np.asarray(pixels)
    if palette is not None:
        table = np.asarray(palette)
        if pixels.ndim != 2 or table.ndim != 2 or table.shape[1] != 3:
            raise ValueError("a palette PNG takes (H, W) indices and an (n, 3) palette")
        if not 1 <= table.shape[0] <= 256 or int(pixels.max(initial=0)) >= table.shape[0]:
            raise ValueError("palette indices out of range")
        color_type = 3
    elif pixels.ndim == 2:
        color_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        color_type = 2
    else:
        raise ValueError(f"cannot encode an array of shape {pixels.shape} as PNG")
    idat = deflate_scanlines(pixels, compress_level=compress_level, strategy=strategy)
    height, width = pixels.shape[:2]
    return assemble_png(width, height, color_type, idat, palette)


#: Outputs written as palette PNGs (label map + colour table): the same pixels, a third of
#: the bytes to filter, deflate and store.
_PALETTED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "recolor": lambda centers: np.asarray(centers, dtype=np.uint8).reshape(-1, 3),
    "color": lambda centers: LABEL2RGB_COLORS[np.arange(len(centers)) % len(LABEL2RGB_COLORS)],
}
#: Outputs whose pixel bytes are the label map itself (grey values or palette indices): one
#: deflated payload serves them all.
_LABEL_BYTES = frozenset({"labels", *_PALETTED})


#: Relative encoding cost, to start the slowest outputs first on the thread pool.
_COST = {"overlay": 4, "gray": 1, "labels": 1, "color": 1, "recolor": 1}


class _SharedPayload:
    """The label map's deflated scanlines, computed once by whichever output asks first."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.lock = threading.Lock()
        self.idat: bytes | None = None

    def get(self) -> bytes:
        with self.lock:
            if self.idat is None:
                self.idat = deflate_scanlines(self.labels)
            return self.idat


def render_outputs(
    names: Iterable[str],
    labels: np.ndarray,
    centers: np.ndarray,
    rgb: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
    workers: int | None = None,
) -> dict[str, bytes]:
    """Render and PNG-encode the named outputs; ``{name: png_bytes}`` in the order given.

    ``labels``, ``color`` and ``recolor`` hold the same pixel bytes (the label map, as grey
    values or palette indices), so they share one deflated payload. zlib releases the GIL,
    so outputs are rendered and encoded on ``workers`` threads; each output's array is
    rendered inside its own task and dropped after encoding, which keeps at most ``workers``
    full-size renders alive at once.
    """
    names = list(names)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    shared = _SharedPayload(labels)
    height, width = labels.shape

    def job(name: str) -> bytes:
        if name in _LABEL_BYTES:
            palette = _PALETTED[name](centers) if name in _PALETTED else None
            # At most 256 colours by construction: the label map indexes a palette.
            return assemble_png(width, height, 0 if palette is None else 3, shared.get(), palette)
        return encode_png(render(name, labels, centers, rgb))

    result: dict[str, bytes] = {}
    if workers <= 1 or len(names) <= 1:
        for i, name in enumerate(names):
            result[name] = job(name)
            if progress is not None:
                progress((i + 1) / len(names))
        return result
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kseg-png") as pool:
        futures = {
            name: pool.submit(job, name) for name in sorted(names, key=lambda n: -_COST.get(n, 1))
        }
        for i, future in enumerate(as_completed(futures.values())):
            future.result()
            if progress is not None:
                progress((i + 1) / len(names))
    return {name: futures[name].result() for name in names}
