"""The one entry point of the segmentation core: :func:`segment`.

(Interface fixed here; the implementation lands with issue 2's core work.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.params import SegmentParams

#: Bumped whenever the core's output for the same image and parameters changes; stored with
#: every result so galleries can tell stale results (``only_stale``).
ALGORITHM_VERSION = "1"

#: ``progress(stage, percent)``: stage is "decode", "fit" or "render"; percent 0..100, never falls.
ProgressFn = Callable[[str, int], None]

ImageSource = bytes | str | os.PathLike[str] | np.ndarray


@dataclass(frozen=True)
class Segmentation:
    """What one segmentation produced.

    Attributes:
        width, height: size of the image after EXIF orientation, in pixels.
        labels: ``(height, width)`` uint8 label map; label 0 is the largest cluster.
        centers: ``(k, 3)`` uint8 RGB cluster centres, row ``i`` for label ``i``.
        outputs: output name -> PNG bytes, only the requested outputs.
        result: JSON-ready metadata as in the API's job ``result`` (without ``outputs``).
    """

    width: int
    height: int
    labels: np.ndarray
    centers: np.ndarray
    outputs: dict[str, bytes]
    result: dict[str, Any]


def segment(
    source: ImageSource,
    params: SegmentParams | None = None,
    *,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
) -> Segmentation:
    raise NotImplementedError
