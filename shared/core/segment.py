"""The one entry point of the segmentation core: :func:`segment`.

``segment`` = decode (:mod:`shared.imageio`) -> cluster (:mod:`shared.cluster`) -> render and
encode (:mod:`shared.render`), plus the metrics of the API's job ``result``.

Metrics, all in 0..255 RGB of the ``recolor`` image against the original, whatever
``normalize`` and ``color_space`` were:

* ``inertia`` — sum over pixels of the squared RGB distance (an exact integer);
* ``mse`` — its mean per pixel, ``inertia / (H * W)`` (the contract's "mean per pixel"; the
  per-channel mean is ``mse / 3``);
* ``n_iter`` — Lloyd iterations over all distinct colours (after seeding on a sample and a
  coarse pass on a 6-bit colour summary; 0 when there were no more colours than k);
* ``psnr`` — ``10 * log10(255² / (mse / 3))`` dB, i.e. the usual PSNR of an RGB image (as
  ``skimage.metrics.peak_signal_noise_ratio``), from the per-channel mean; ``null`` when
  ``mse`` is 0 (a lossless result has infinite PSNR, which JSON cannot hold).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kseg.shared.core.accel import compiled_lloyd_step
from kseg.shared.core.allocator import retain_freed_memory
from kseg.shared.core.cluster import Clustering, cluster_image
from kseg.shared.core.colornames import nearest_color_names
from kseg.shared.core.imageio import load_image
from kseg.shared.core.params import SegmentParams
from kseg.shared.core.render import render_outputs

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


#: Overall progress (percent) at the start of each stage; each stage fills up to the next.
_STAGE_START = {"decode": 0, "fit": 10, "render": 70, "done": 100}


class _Progress:
    """Turns stage fractions into overall percents that never decrease."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self.last = -1

    def __call__(self, stage: str, fraction: float) -> None:
        if self.callback is None:
            return
        stages = list(_STAGE_START)
        start = _STAGE_START[stage]
        end = _STAGE_START[stages[stages.index(stage) + 1]]
        percent = int(start + (end - start) * min(max(fraction, 0.0), 1.0))
        if percent > self.last:
            self.last = percent
            self.callback(stage, percent)


def prepare_for_many_jobs(retain_bytes: int) -> None:
    """Set this process up to run many segmentations, as the worker does before its pool
    forks: scikit-learn's compiled Lloyd step loaded (an import of ~1 s, paid once instead of
    in the first job) and up to ``retain_bytes`` of freed memory kept for the next job
    (:func:`shared.allocator.retain_freed_memory`). Cheap to call again."""
    compiled_lloyd_step()
    retain_freed_memory(retain_bytes)


def quality(inertia: int, n_pixels: int) -> tuple[float, float | None]:
    """``(mse, psnr)`` of an RGB inertia over ``n_pixels``; psnr None when mse is 0."""
    mse = inertia / n_pixels
    if mse <= 0:
        return 0.0, None
    return mse, 10.0 * math.log10(255.0**2 / (mse / 3.0))


def clusters_table(clustering: Clustering) -> list[dict[str, Any]]:
    """The ``clusters`` list of a result, label order."""
    total = int(clustering.counts.sum())
    names = nearest_color_names(clustering.centers)
    return [
        {
            "label": i,
            "rgb": [int(v) for v in rgb],
            "hex": "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb)),
            "name": name,
            "pixels": int(count),
            "fraction": round(int(count) / total, 6),
        }
        for i, (rgb, count, name) in enumerate(
            zip(clustering.centers, clustering.counts, names, strict=True)
        )
    ]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def segment(
    source: ImageSource,
    params: SegmentParams | None = None,
    *,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
    n_threads: int | None = None,
) -> Segmentation:
    """Segment an image by K-Means colour clustering.

    Args:
        source: encoded image bytes, a path, or an ``(H, W[, 3|4])`` uint8 array.
        params: the segmentation parameters (defaults: ``SegmentParams()``).
        max_pixels: refuse larger images (checked before decoding); ``None`` uses the
            ``KSEG_MAX_IMAGE_PIXELS`` setting.
        progress: called as ``progress(stage, percent)`` with stage "decode" (0..10),
            "fit" (10..70) or "render" (70..100); percent never decreases.
        n_threads: threads for clustering and PNG encoding (1 or 2); ``None`` uses
            ``KSEG_CORE_THREADS`` or, unset, up to 2 of this machine's CPUs. Results are
            reproducible for equal inputs, seed and thread count.

    Returns:
        A :class:`Segmentation` with the label map, centres, PNG outputs and the result dict
        (k, inertia, mse, psnr, n_iter, clusters, k_scores when k is "auto", timings_ms,
        plus n_colors, width, height, algorithm_version).

    Raises:
        shared.errors.ImageError subclasses for unusable images (see :mod:`shared.imageio`).
    """
    params = params or SegmentParams()
    if n_threads is None:
        from kseg.shared.settings import get_settings  # deferred: settings read the environment

        n_threads = get_settings().threads_per_job()
    report = _Progress(progress)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    report("decode", 0.0)
    rgb = load_image(source, max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    t1 = time.perf_counter()
    report("fit", 0.0)
    clustering = cluster_image(
        rgb, **params.cluster_options(), progress=lambda f: report("fit", f), n_threads=n_threads
    )
    t2 = time.perf_counter()
    report("render", 0.0)
    outputs = render_outputs(
        params.outputs,
        clustering.labels,
        clustering.centers,
        rgb,
        progress=lambda f: report("render", f),
        workers=n_threads,
    )
    t3 = time.perf_counter()

    mse, psnr = quality(clustering.inertia, width * height)
    result: dict[str, Any] = {
        "k": clustering.k,
        "inertia": float(clustering.inertia),
        "mse": mse,
        "psnr": psnr,
        "n_iter": clustering.n_iter,
        "clusters": clusters_table(clustering),
    }
    if clustering.k_scores is not None:
        result["k_scores"] = clustering.k_scores
    result["n_colors"] = clustering.n_colors
    result["width"], result["height"] = width, height
    result["algorithm_version"] = ALGORITHM_VERSION
    result["timings_ms"] = {
        "decode": _ms(t1 - t0),
        "fit": _ms(t2 - t1),
        "render": _ms(t3 - t2),
        "total": _ms(t3 - t0),
        # CPU time of the calling thread (not of OpenMP helpers): unlike wall time, it does
        # not grow when other processes compete for the CPUs.
        "cpu": _ms(time.thread_time() - cpu0),
    }
    report("render", 1.0)
    return Segmentation(
        width=width,
        height=height,
        labels=clustering.labels,
        centers=clustering.centers,
        outputs=outputs,
        result=result,
    )
