"""K-Means colour clustering of an image, done on its distinct colours.

The core identity: K-Means over all H×W pixels equals *weighted* K-Means over the image's
distinct colours, each weighted by its pixel count — the assignment step gives equal colours
equal labels, and the update step's mean over pixels is the count-weighted mean over colours.
A photo has far fewer distinct colours (a 12 MP JPEG ~0.5 M) than pixels, so every Lloyd
iteration is that much cheaper, and the per-pixel label map comes from one lookup table indexed
by the packed colour code instead of a 12 M × k distance matrix.

Pipeline (:func:`cluster_image`):

1. pack each pixel to ``r << 16 | g << 8 | b`` (uint32) and count distinct codes by sorting
   (:func:`color_histogram`; sorting 12 M uint32 is faster than ``np.bincount`` with 2**24
   bins once page faults of the 128 MB count array are included — measured, see bench/);
2. map the distinct colours to clustering features (:func:`color_features`);
3. k-means++ seeding, ``n_init`` times, on a count-weighted sample of ≤ ``sample_size``
   distinct colours, each followed by a few Lloyd steps on the sample; the best (lowest sample
   inertia) is refined on a 6-bit-per-channel summary of the colours and then by weighted
   Lloyd over *all* distinct colours to ``tol`` (:func:`fit_kmeans`, :func:`weighted_lloyd`);
4. label every pixel through ``lut[code]``; renumber labels by cluster size; the reported
   colour of a cluster is the mean RGB of its pixels, and the inertia is measured against it.

Units: colours are 0..255 RGB unless stated; "feature space" is the space clustering ran in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
from PIL import Image

from kseg.shared.core import accel

__all__ = [
    "Clustering",
    "ColorHistogram",
    "KMeansFit",
    "choose_k",
    "cluster_image",
    "coarse_groups",
    "color_features",
    "color_histogram",
    "fit_kmeans",
    "kmeans_plusplus",
    "kneedle_scores",
    "nearest_center",
    "pack_rgb",
    "unpack_codes",
    "weighted_lloyd",
]

Normalize = Literal["minmax", "fixed", "none"]
ColorSpace = Literal["rgb", "lab"]
FractionFn = Callable[[float], None]

#: Rows of the (rows × k) distance block computed at once; small enough to stay in cache.
_CHUNK = 1 << 14
_N_COLORS = 1 << 24


# --------------------------------------------------------------------------------------------
# Distinct colours


@dataclass(frozen=True)
class ColorHistogram:
    """The distinct colours of an image and how many pixels have each.

    Attributes:
        codes: ``(M,)`` uint32 packed colours ``r << 16 | g << 8 | b``, ascending.
        colors: ``(M, 3)`` uint8 RGB of each code.
        counts: ``(M,)`` int64 pixel count of each colour; sums to the pixel count.
    """

    codes: np.ndarray
    colors: np.ndarray
    counts: np.ndarray

    @property
    def n_pixels(self) -> int:
        return int(self.counts.sum())

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(N, 3)`` uint8 RGB -> ``(H*W,)`` uint32 codes ``r << 16 | g << 8 | b``.

    Shifts and ors in place on one uint32 array: no temporaries, 3.5x faster at 12 MP than
    writing the bytes into 4-byte words through a strided view (measured, numpy 2.4).
    """
    flat = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    codes = flat[:, 0].astype(np.uint32)
    codes <<= 8
    codes |= flat[:, 1]
    codes <<= 8
    codes |= flat[:, 2]
    return codes


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """``(M,)`` uint32 codes -> ``(M, 3)`` uint8 RGB (inverse of :func:`pack_rgb`)."""
    codes = np.asarray(codes, dtype=np.uint32)
    out = np.empty((codes.shape[0], 3), dtype=np.uint8)
    out[:, 0] = codes >> 16
    out[:, 1] = (codes >> 8) & 0xFF
    out[:, 2] = codes & 0xFF
    return out


def color_histogram(codes: np.ndarray) -> ColorHistogram:
    """Distinct colours of packed pixel codes and their pixel counts.

    Args:
        codes: ``(N,)`` uint32 packed pixels (see :func:`pack_rgb`), N ≥ 1.
    """
    ordered = np.sort(codes)  # SIMD quicksort: 10× faster here than the stable radix sort
    starts = np.empty(ordered.shape[0], dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    distinct = ordered[first]
    del ordered, starts
    counts = np.diff(first, append=codes.shape[0]).astype(np.int64)
    return ColorHistogram(codes=distinct, colors=unpack_codes(distinct), counts=counts)


# --------------------------------------------------------------------------------------------
# Features


def color_features(
    colors: np.ndarray,
    *,
    normalize: Normalize = "fixed",
    color_space: ColorSpace = "rgb",
) -> np.ndarray:
    """Map ``(M, 3)`` uint8 RGB colours to the ``(M, 3)`` float64 space clustering runs in.

    ``color_space``: ``rgb`` keeps the 0..255 values; ``lab`` converts with
    ``skimage.color.rgb2lab`` (sRGB, D65), giving L in 0..100 and a, b in about -128..127.

    ``normalize``:

    * ``none``: the values as they are (0..255 RGB, or raw Lab);
    * ``fixed``: a fixed affine map — in RGB the tutorial's ``(c + 1) / 256``; in Lab all three
      channels divided by one factor, 100, so Euclidean distance stays CIE76 ΔE (÷ 100)
      instead of re-weighting lightness against colour;
    * ``minmax``: per channel ``(x - min) / (max - min)`` over the image's pixels, as
      ``sklearn.preprocessing.MinMaxScaler`` (a constant channel maps to 0). The min and max
      over pixels equal those over distinct colours, so this is computed on the colours.

    K-Means is invariant to translating and uniformly scaling the data, so ``none`` and
    ``fixed`` give the same clustering; ``minmax`` stretches channels unequally and can differ.
    """
    values = np.asarray(colors, dtype=np.float64)
    if color_space == "lab":
        from skimage.color import rgb2lab  # deferred: skimage.color import is slow

        values = rgb2lab((values / 255.0).reshape(-1, 1, 3)).reshape(-1, 3)
    elif color_space != "rgb":
        raise ValueError(f"unknown color_space {color_space!r}")

    if normalize == "none":
        return values
    if normalize == "fixed":
        return values / 100.0 if color_space == "lab" else (values + 1.0) / 256.0
    if normalize == "minmax":
        lo = values.min(axis=0)
        span = values.max(axis=0) - lo
        span[span == 0] = 1.0
        return (values - lo) / span
    raise ValueError(f"unknown normalize {normalize!r}")


# --------------------------------------------------------------------------------------------
# Weighted K-Means


def _augment(x: np.ndarray) -> np.ndarray:
    """``(M, d)`` -> ``(M, d + 1)`` with a column of ones (see :func:`_nearest`)."""
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float64)
    out[:, :-1] = x
    out[:, -1] = 1.0
    return out


def _nearest(
    xa: np.ndarray, x2: np.ndarray | None, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest centre of augmented points ``xa`` (:func:`_augment`); distances if ``x2`` given.

    ``|x - c|² = |x|² - 2 x·c + |c|²``; the ``|c|²`` term rides in the matmul as the weight of
    the ones column, so each row block costs one matmul and one argmin pass, and ``|x|²``
    (``x2``, constant per point) is added only to the winning distance.
    """
    n = xa.shape[0]
    proj = np.empty((centers.shape[1] + 1, centers.shape[0]), dtype=np.float64)
    proj[:-1] = -2.0 * centers.T
    proj[-1] = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(n, dtype=np.intp)
    d2 = np.empty(n, dtype=np.float64) if x2 is not None else None
    for start in range(0, n, _CHUNK):
        stop = start + _CHUNK
        dist = xa[start:stop] @ proj
        lab = dist.argmin(axis=1)
        labels[start:stop] = lab
        if d2 is not None and x2 is not None:
            best = np.take_along_axis(dist, lab[:, None], axis=1)[:, 0]
            best += x2[start:stop]
            np.maximum(best, 0.0, out=best)  # the expansion can dip just below 0
            d2[start:stop] = best
    return labels, d2


def nearest_center(
    x: np.ndarray, centers: np.ndarray, *, with_distances: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Index of the nearest centre for each row, and optionally the squared distance.

    Args:
        x: ``(M, d)`` float64 points.
        centers: ``(k, d)`` float64 centres.
        with_distances: also return the ``(M,)`` squared Euclidean distances.

    Returns:
        ``(labels, d2)``: ``(M,)`` intp labels (first minimum on ties) and distances or None.

    Works in row blocks so the M × k distance matrix never exists at once.
    """
    x2 = np.einsum("ij,ij->i", x, x) if with_distances else None
    return _nearest(_augment(x), x2, np.asarray(centers, dtype=np.float64))


def _weighted_means(
    x: np.ndarray, w: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(k, d)`` weighted mean of the rows of each label, and the ``(k,)`` weight of each."""
    mass, sums = _weighted_sums(w[:, None] * x, w, labels, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / mass[:, None]
    return means, mass


def _weighted_sums(
    wx: np.ndarray, w: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per label: total weight ``(k,)`` and weighted coordinate sums ``(k, d)``."""
    mass = np.bincount(labels, weights=w, minlength=k)
    sums = np.stack(
        [np.bincount(labels, weights=wx[:, j], minlength=k) for j in range(wx.shape[1])],
        axis=1,
    )
    return mass, sums


def _tolerance(x: np.ndarray, w: np.ndarray, tol: float) -> float:
    """Absolute centre-shift tolerance: ``tol`` × the mean weighted per-feature variance."""
    if tol <= 0:
        return 0.0
    total = w.sum()
    mean = (w @ x) / total
    var = np.einsum("i,ij,ij->j", w, x, x) / total - mean**2  # E[x²] - E[x]²: one pass
    return float(tol * np.maximum(var, 0.0).mean())


def weighted_lloyd(
    x: np.ndarray,
    w: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    tol_abs: float | None = None,
    n_threads: int = 1,
    with_inertia: bool = True,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Lloyd's algorithm on weighted points, from given centres.

    Args:
        x: ``(M, d)`` float64 points (here: distinct colours in feature space).
        w: ``(M,)`` positive weights (pixel counts).
        centers: ``(k, d)`` initial centres, k ≤ M.
        max_iter: most update steps.
        tol: stop when the summed squared centre shift falls to ``tol`` × the mean weighted
            variance of the features (scikit-learn's convention); 0 runs to strict
            convergence (labels unchanged).
        tol_abs: the absolute tolerance instead (overrides ``tol``), so that a sample or a
            summary of the data can be held to the tolerance of the whole.
        n_threads: threads of the compiled Lloyd step (at most :data:`MAX_THREADS`).
        with_inertia: compute the inertia (one more pass over the points); else it is NaN.

    Returns:
        ``(centers, labels, inertia, n_iter)``: the final centres, ``(M,)`` labels consistent
        with them, the weighted sum of squared distances (feature units) and the number of
        update steps. An empty cluster is moved onto the point currently farthest from its
        centre, as scikit-learn does, so no cluster ends empty while M ≥ k.

    Each step runs in scikit-learn's compiled Lloyd step when it can be imported, else in
    numpy (:func:`_numpy_lloyd`); both take the same steps.
    """
    if tol_abs is None:
        tol_abs = _tolerance(x, w, tol)
    centers = np.array(centers, dtype=np.float64)
    step = accel.loaded_lloyd_step()
    if step is not None:
        centers, labels, n_iter = _kernel_lloyd(step, x, w, centers, max_iter, tol_abs, n_threads)
    else:
        centers, labels, n_iter = _numpy_lloyd(x, w, centers, max_iter, tol_abs)
    inertia = math.nan
    if with_inertia:
        diff = x - centers[labels]
        inertia = float(np.einsum("ij,ij->i", diff, diff) @ w)
    return centers, labels, inertia, n_iter


#: Most threads of the compiled Lloyd step. Its per-thread partial sums are added in the
#: order threads finish: with two, ``a + b == b + a`` exactly; with more the last bits of a
#: centre could vary between runs, and equal seeds must give equal results.
MAX_THREADS = 2


def _kernel_lloyd(
    step: Callable[..., None],
    x: np.ndarray,
    w: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    tol_abs: float,
    n_threads: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations by scikit-learn's compiled step; as :func:`_numpy_lloyd`.

    Each step labels the points by ``centers`` and returns the weighted means of those
    labels. Unchanged labels mean the means are a fixed point; stopping on ``tol_abs``
    instead takes one more labels-only pass, so the labels always belong to the centres.
    """
    n, k = x.shape[0], centers.shape[0]
    x = np.ascontiguousarray(x, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    centers = np.array(centers, dtype=np.float64, order="C")
    new = np.empty_like(centers)
    mass = np.empty(k, dtype=np.float64)
    shift = np.empty(k, dtype=np.float64)
    labels = np.empty(n, dtype=np.int32)
    previous = np.full(n, -1, dtype=np.int32)
    threads = max(1, min(int(n_threads), MAX_THREADS))
    n_iter, settled = 0, False
    for _ in range(max_iter):
        step(x, w, centers, new, mass, labels, shift, threads, True)
        centers, new = new, centers
        n_iter += 1
        if np.array_equal(labels, previous):
            settled = True
            break
        if float(shift @ shift) <= tol_abs:
            break
        previous[:] = labels
    if not settled:
        step(x, w, centers, None, None, labels, shift, threads, False)
    return centers, labels.astype(np.intp), n_iter


def _numpy_lloyd(
    x: np.ndarray, w: np.ndarray, centers: np.ndarray, max_iter: int, tol_abs: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations in numpy; the same steps and stops as :func:`_kernel_lloyd`."""
    k = centers.shape[0]
    xa = _augment(x)
    wx = w[:, None] * x
    labels, _ = _nearest(xa, None, centers)
    n_iter = 0
    for _ in range(max_iter):
        mass, sums = _weighted_sums(wx, w, labels, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            new = sums / mass[:, None]
        empty = np.flatnonzero(mass <= 0)
        if empty.size:
            diff = x - centers[labels]
            far = np.argsort(-np.einsum("ij,ij->i", diff, diff), kind="stable")[: empty.size]
            new[empty] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        n_iter += 1
        new_labels, _ = _nearest(xa, None, centers)
        changed = not np.array_equal(new_labels, labels)
        labels = new_labels
        if not changed:
            n_iter += 1  # the compiled step spends one more update finding the fixed point
            break
        if shift <= tol_abs:
            break
    return centers, labels, n_iter


@dataclass(frozen=True)
class KMeansFit:
    """A weighted K-Means solution in feature space.

    Attributes:
        centers: ``(k, d)`` float64 centres.
        labels: ``(M,)`` label of each point, consistent with ``centers``.
        inertia: weighted sum of squared distances of the points to their centres.
        n_iter: Lloyd update steps over all points.
        n_iter_coarse: Lloyd update steps over the coarse summary before that (0 if none).
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    n_iter_coarse: int = 0


def coarse_groups(colors: np.ndarray, bits: int = 6) -> np.ndarray:
    """``(M,)`` index of each ``(M, 3)`` uint8 colour's cell in a ``2**bits`` per channel grid."""
    shift = 8 - bits
    c = np.asarray(colors, dtype=np.uint8)
    return (
        ((c[:, 0].astype(np.intp) >> shift) << (2 * bits))
        | ((c[:, 1].astype(np.intp) >> shift) << bits)
        | (c[:, 2].astype(np.intp) >> shift)
    )


def _summarise(x: np.ndarray, w: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and total weight of the points of each occupied group."""
    size = int(groups.max()) + 1
    mass = np.bincount(groups, weights=w, minlength=size)
    occupied = np.flatnonzero(mass > 0)
    sums = np.stack(
        [
            np.bincount(groups, weights=w * x[:, j], minlength=size)[occupied]
            for j in range(x.shape[1])
        ],
        axis=1,
    )
    return sums / mass[occupied, None], mass[occupied]


def _weighted_sample(
    x: np.ndarray, w: np.ndarray, size: int, rng: np.random.Generator, *, at_least: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """≤ ``size`` rows drawn with probability ∝ weight (with replacement), and their multiplicity.

    Drawing ∝ pixel count makes the sample's colour distribution an unbiased estimate of the
    image's; repeated draws are merged into weights so no point is duplicated. When a few
    colours hold nearly all pixels the draws may repeat so much that fewer than ``at_least``
    distinct rows come out; then uniformly chosen extra rows join with their own (tiny) share
    of the weight, so seeding k centres stays possible.
    """
    if x.shape[0] <= size:
        return x, w
    # Inverse-CDF draws; sorted keys make the binary searches walk the CDF in order (3x
    # faster than ``rng.choice(p=...)`` on 200 k colours).
    cdf = np.cumsum(w)
    keys = np.sort(rng.random(size)) * cdf[-1]
    picks = np.minimum(np.searchsorted(cdf, keys, side="right"), x.shape[0] - 1)
    rows, mult = np.unique(picks, return_counts=True)
    weights = mult.astype(np.float64)
    if rows.size < at_least:
        others = np.setdiff1d(np.arange(x.shape[0]), rows, assume_unique=True)
        extra = np.sort(rng.choice(others, size=at_least - rows.size, replace=False))
        rows = np.concatenate([rows, extra])
        weights = np.concatenate([weights, w[extra] * (size / w.sum())])
    return x[rows], weights


def kmeans_plusplus(
    x: np.ndarray,
    w: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Weighted greedy k-means++ seeding (Arthur & Vassilvitskii 2007; as scikit-learn's).

    Each new centre is the best, by resulting potential, of ``n_local_trials`` (default
    ``2 + ln k``) candidates drawn with probability ∝ weight × squared distance to the nearest
    centre so far.

    Args:
        x: ``(M, d)`` float64 points, M ≥ k.
        w: ``(M,)`` positive weights.
        k: centres to pick.
        rng: random generator (consumed).

    Returns:
        ``(k, d)`` float64 initial centres, rows of ``x``.
    """
    n = x.shape[0]
    trials = n_local_trials or 2 + int(np.log(k))
    x2 = np.einsum("ij,ij->i", x, x)
    chosen = np.empty(k, dtype=np.intp)
    chosen[0] = rng.choice(n, p=w / w.sum())
    closest = np.maximum(x2 - 2.0 * (x @ x[chosen[0]]) + x2[chosen[0]], 0.0)
    potential = float(closest @ w)
    for i in range(1, k):
        if potential <= 0.0:  # every point sits on a centre: take unused points in order
            unused = np.setdiff1d(np.arange(n), chosen[:i])
            chosen[i:] = unused[: k - i]
            break
        cumulative = np.cumsum(w * closest)
        candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1])
        candidates = np.minimum(candidates, n - 1)
        # (trials, n) squared distances by the expansion: one small matmul
        dist = x[candidates] @ (-2.0 * x.T)
        dist += x2
        dist += x2[candidates][:, None]
        np.maximum(dist, 0.0, out=dist)
        np.minimum(dist, closest, out=dist)
        potentials = dist @ w
        best = int(np.argmin(potentials))
        chosen[i] = candidates[best]
        closest, potential = dist[best], float(potentials[best])
    return x[chosen].copy()


def _seeded_fit(
    xs: np.ndarray,
    ws: np.ndarray,
    k: int,
    *,
    n_init: int,
    rng: np.random.Generator,
    max_iter: int,
    tol: float,
    tol_abs: float | None = None,
    n_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Best of ``n_init`` k-means++ seedings each refined by Lloyd on ``(xs, ws)``.

    Returns ``(centers, labels, inertia, n_iter)`` of the seeding with the lowest inertia.
    """
    best: tuple[np.ndarray, np.ndarray, float, int] | None = None
    for _ in range(n_init):
        init = kmeans_plusplus(xs, ws, k, rng)
        fitted = weighted_lloyd(
            xs, ws, init, max_iter=max_iter, tol=tol, tol_abs=tol_abs, n_threads=n_threads
        )
        if best is None or fitted[2] < best[2]:
            best = fitted
    assert best is not None
    return best


def fit_kmeans(
    x: np.ndarray,
    w: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 3,
    sample_size: int = 20_000,
    seed_iter: int = 20,
    tol: float = 1e-4,
    max_iter: int = 300,
    init: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_threads: int = 1,
    with_inertia: bool = True,
) -> KMeansFit:
    """Weighted K-Means of points ``x`` with weights ``w``: seed, coarse refine, refine on all.

    1. Seeding (unless ``init`` is given): ``n_init`` k-means++ seedings on a weighted sample
       of ≤ ``sample_size`` points, each improved by ≤ ``seed_iter`` Lloyd steps on the sample;
       the lowest sample inertia wins.
    2. Coarse refinement (when ``groups`` summarise the points at least 2:1): Lloyd to ``tol``
       on the weighted means of the groups — a cheap, close approximation (the colour
       quantised to 6 bits per channel) that removes most of Lloyd's slow tail.
    3. Lloyd to ``tol`` over all points.

    Args:
        x: ``(M, d)`` float64 points, M > k.
        w: ``(M,)`` positive weights.
        k: number of clusters.
        seed: random state of sampling and seeding; equal inputs give equal outputs.
        n_init, sample_size, seed_iter: seeding effort (see above).
        tol: relative tolerance of Lloyd (see :func:`weighted_lloyd`).
        init: ``(k, d)`` centres to start from instead of seeding.
        groups: ``(M,)`` non-negative group index per point (:func:`coarse_groups`).
        n_threads: threads of the compiled Lloyd step (at most :data:`MAX_THREADS`).
        with_inertia: compute the final inertia (one more pass); else it is NaN.
    """
    tol_abs = _tolerance(x, w, tol)  # every stage is held to the whole data's tolerance
    if init is None:
        rng = np.random.default_rng(seed)
        xs, ws = _weighted_sample(x, w, sample_size, rng, at_least=k)
        seeded_fit = partial(
            _seeded_fit, k=k, n_init=n_init, rng=rng, tol=tol, tol_abs=tol_abs, n_threads=n_threads
        )
        if xs is x:  # few points: seed and refine on all of them, no sampling
            return KMeansFit(*seeded_fit(x, w, max_iter=max_iter))
        init, _, _, _ = seeded_fit(xs, ws, max_iter=seed_iter)
    n_coarse = 0
    if groups is not None:
        xg, wg = _summarise(x, w, groups)
        if k < xg.shape[0] <= x.shape[0] // 2:
            init, _, _, n_coarse = weighted_lloyd(
                xg,
                wg,
                init,
                max_iter=max_iter,
                tol_abs=tol_abs,
                n_threads=n_threads,
                with_inertia=False,
            )
    centers, labels, inertia, n_iter = weighted_lloyd(
        x,
        w,
        init,
        max_iter=max_iter,
        tol_abs=tol_abs,
        n_threads=n_threads,
        with_inertia=with_inertia,
    )
    return KMeansFit(centers, labels, inertia, n_iter, n_coarse)


# --------------------------------------------------------------------------------------------
# Choosing k


def kneedle_scores(ks: np.ndarray, inertias: np.ndarray) -> np.ndarray:
    """Kneedle score of each k on a decreasing inertia curve (Satopää et al., 2011).

    Both axes are scaled to 0..1; the score is ``(1 - inertia_scaled) - k_scaled``, the
    height of the normalised curve above the chord joining its ends. The elbow — the k after
    which more clusters buy little — has the highest score. The ends always score 0.
    """
    ks = np.asarray(ks, dtype=np.float64)
    inertias = np.asarray(inertias, dtype=np.float64)
    if ks.size < 3:
        return np.zeros_like(ks)
    k_scaled = (ks - ks[0]) / (ks[-1] - ks[0])
    span = inertias.max() - inertias.min()
    gain = (inertias[0] - inertias) / span if span > 0 else np.zeros_like(inertias)
    return gain - k_scaled


def choose_k(
    x: np.ndarray,
    w: np.ndarray,
    k_min: int,
    k_max: int,
    *,
    seed: int = 0,
    n_init: int = 2,
    sample_size: int = 10_000,
    progress: FractionFn | None = None,
    n_threads: int = 1,
) -> tuple[int, list[dict[str, float]], dict[int, np.ndarray]]:
    """Pick k in ``k_min..k_max`` by the kneedle elbow of inertia.

    Each k is fitted (k-means++ × ``n_init`` + Lloyd) on one shared count-weighted sample of
    the distinct colours; its inertia (feature units) is scaled to the whole image's weight.
    The chosen k has the highest :func:`kneedle_scores` score; ties and the degenerate ranges
    (fewer than 3 values of k, a flat curve) go to the smallest k.

    Returns:
        ``(k, scores, centers)``: the chosen k, ``[{"k", "inertia", "score"}]`` for every k
        tried, and each k's sample centres (to start the final refinement from).
    """
    rng = np.random.default_rng(seed)
    xs, ws = _weighted_sample(x, w, sample_size, rng, at_least=k_max)
    scale = float(w.sum() / ws.sum())
    ks = list(range(k_min, k_max + 1))
    inertias: list[float] = []
    centers: dict[int, np.ndarray] = {}
    for i, k in enumerate(ks):
        if k >= xs.shape[0]:  # a cluster per sampled colour: nothing left to explain
            centers[k], inertia = xs, 0.0
        else:
            centers[k], _, inertia, _ = _seeded_fit(
                xs, ws, k, n_init=n_init, rng=rng, max_iter=100, tol=1e-4, n_threads=n_threads
            )
        inertias.append(inertia * scale)
        if progress is not None:
            progress((i + 1) / len(ks))
    scores = kneedle_scores(np.array(ks), np.array(inertias))
    chosen = ks[int(np.argmax(scores))]  # argmax takes the first (smallest k) on ties
    table = [
        {"k": int(k), "inertia": float(i), "score": round(float(s), 6)}
        for k, i, s in zip(ks, inertias, scores, strict=True)
    ]
    return chosen, table, centers


# --------------------------------------------------------------------------------------------
# The whole image


@dataclass(frozen=True)
class Clustering:
    """The clustering of one image, labels renumbered by cluster size.

    Attributes:
        labels: ``(H, W)`` uint8 label map; label 0 has the most pixels.
        centers: ``(k, 3)`` uint8 RGB of each cluster: the rounded mean 0..255 RGB colour of
            its pixels (for ``rgb`` clustering, the K-Means centre mapped back to RGB).
        counts: ``(k,)`` int64 pixels per cluster, non-increasing.
        inertia: sum over pixels of the squared 0..255 RGB distance between the pixel and its
            cluster's ``centers`` colour (exact integer).
        n_iter: Lloyd update steps of the final refinement.
        n_colors: distinct colours in the image.
        k_requested: the k asked for (an int, or "auto").
        k_scores: for ``"auto"``, every tried k's ``{"k", "inertia", "score"}``.
        extra: diagnostics (``n_iter_coarse``: Lloyd steps on the 6-bit colour summary).
    """

    labels: np.ndarray
    centers: np.ndarray
    counts: np.ndarray
    inertia: int
    n_iter: int
    n_colors: int
    k_requested: int | str
    k_scores: list[dict[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Effective number of clusters (≤ requested when the image has fewer colours)."""
        return int(self.centers.shape[0])


def _downscaled(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` shrunk (Pillow BOX filter, aspect kept) so its longer side is ≤ ``max_side``."""
    height, width = rgb.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return rgb
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(rgb).resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def _size_order(counts: np.ndarray, centers_rgb: np.ndarray) -> np.ndarray:
    """Cluster order by pixel count, largest first; ties by packed centre colour, then index."""
    codes = pack_rgb(centers_rgb).astype(np.int64)
    return np.lexsort((np.arange(counts.size), codes, -counts))


@accel.single_threaded_blas()
def cluster_image(
    rgb: np.ndarray,
    *,
    k: int | Literal["auto"] = 16,
    k_min: int = 2,
    k_max: int = 12,
    normalize: Normalize = "fixed",
    color_space: ColorSpace = "rgb",
    max_side: int | None = None,
    seed: int = 0,
    n_init: int = 3,
    sample_size: int = 20_000,
    tol: float = 1e-4,
    progress: FractionFn | None = None,
    n_threads: int = 1,
) -> Clustering:
    """Cluster the pixel colours of an image.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        k: clusters wanted (≥ 1), or ``"auto"`` to choose in ``k_min..k_max``
            (:func:`choose_k`).
        normalize, color_space: the feature space (:func:`color_features`).
        max_side: fit on a copy whose longer side is at most this many pixels; the labels
            (nearest fitted centre) and colours are still computed for every full-size pixel.
        seed: random state; equal inputs give byte-equal outputs.
        n_init, sample_size, tol: see :func:`fit_kmeans`.
        progress: called with the fraction 0..1 of the clustering done.
        n_threads: threads of the compiled Lloyd step, 1 or 2 (more are capped at
            :data:`MAX_THREADS`). The same seed and thread count give the same result; one
            and two threads add partial sums in a different order, so their centres may
            differ in the last bits.

    BLAS runs single-threaded meanwhile (:func:`.accel.single_threaded_blas`).

    Returns:
        A :class:`Clustering`. When the image has no more distinct colours than k, each
        colour is its own cluster (effective k = number of colours, possibly 1).
    """
    report = progress or (lambda _f: None)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    codes = pack_rgb(rgb)
    hist = color_histogram(codes)
    report(0.15)

    fit_hist = hist
    if max_side is not None and max(height, width) > max_side:
        fit_hist = color_histogram(pack_rgb(_downscaled(rgb, max_side)))
    x_fit = color_features(fit_hist.colors, normalize=normalize, color_space=color_space)
    w_fit = fit_hist.counts.astype(np.float64)
    report(0.2)

    k_scores: list[dict[str, float]] | None = None
    init: np.ndarray | None = None
    if k == "auto":
        k_eff, k_scores, sample_centers = choose_k(
            x_fit,
            w_fit,
            k_min,
            k_max,
            seed=seed,
            progress=lambda f: report(0.2 + 0.5 * f),
            n_threads=n_threads,
        )
        init = sample_centers[k_eff] if sample_centers[k_eff].shape[0] == k_eff else None
    else:
        k_eff = int(k)
    if not 1 <= k_eff <= 256:
        raise ValueError(f"k must be 1..256 (labels are 8-bit), not {k_eff}")

    n_iter, n_coarse = 0, 0
    color_labels: np.ndarray | None = None
    if len(fit_hist) <= k_eff:
        # No more colours than clusters: each colour is a cluster, exactly.
        fit_centers = x_fit
        if fit_hist is hist:
            color_labels = np.arange(len(hist))
    else:
        fitted = fit_kmeans(
            x_fit,
            w_fit,
            k_eff,
            seed=seed,
            n_init=n_init,
            sample_size=sample_size,
            tol=tol,
            init=init,
            groups=coarse_groups(fit_hist.colors),
            n_threads=n_threads,
            with_inertia=False,  # measured below, exactly, in 0..255 RGB
        )
        fit_centers, n_iter, n_coarse = fitted.centers, fitted.n_iter, fitted.n_iter_coarse
        if fit_hist is hist:
            color_labels = fitted.labels  # Lloyd's final assignment, consistent with centres
    report(0.85)

    if color_labels is None:
        # Fitted on a downscaled copy: every full-size colour goes to its nearest centre.
        x_all = color_features(hist.colors, normalize=normalize, color_space=color_space)
        color_labels, _ = nearest_center(x_all, fit_centers)
    counts_w = hist.counts
    n_clusters = fit_centers.shape[0]
    counts = np.bincount(color_labels, weights=counts_w, minlength=n_clusters).astype(np.int64)
    means, _ = _weighted_means(
        hist.colors.astype(np.float64), counts_w.astype(np.float64), color_labels, n_clusters
    )
    keep = np.flatnonzero(counts > 0)  # possible only with max_side: a centre nobody is near
    centers_rgb = np.clip(np.rint(means[keep]), 0, 255).astype(np.uint8)
    counts = counts[keep]
    order = _size_order(counts, centers_rgb)
    new_label = np.full(n_clusters, -1, dtype=np.intp)
    new_label[keep[order]] = np.arange(order.size)
    centers_rgb, counts = centers_rgb[order], counts[order]
    color_labels = new_label[color_labels].astype(np.uint8)

    diff = hist.colors.astype(np.int64) - centers_rgb[color_labels].astype(np.int64)
    inertia = int(np.einsum("ij,ij->i", diff, diff) @ hist.counts)

    # Only the image's own codes are ever looked up, so the table needs no zeroing.
    lut = np.empty(_N_COLORS, dtype=np.uint8)
    lut[hist.codes] = color_labels
    labels = np.take(lut, codes).reshape(height, width)
    report(1.0)
    return Clustering(
        labels=labels,
        centers=centers_rgb,
        counts=counts,
        inertia=inertia,
        n_iter=int(n_iter),
        n_colors=len(hist),
        k_requested=k,
        k_scores=k_scores,
        extra={"n_iter_coarse": int(n_coarse)},
    )
