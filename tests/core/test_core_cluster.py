"""Clustering: the distinct-colour identity, determinism, label order, effective and auto k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_rgb
from sklearn.cluster import KMeans

from kseg.shared.core import accel, cluster
from kseg.shared.core.cluster import (
    cluster_image,
    color_features,
    color_histogram,
    kneedle_scores,
    pack_rgb,
    unpack_codes,
    weighted_lloyd,
)


def test_pack_and_unpack_are_inverse() -> None:
    rgb = np.array([[0, 0, 0], [255, 255, 255], [1, 2, 3], [255, 0, 128]], dtype=np.uint8)
    codes = pack_rgb(rgb)
    assert codes.dtype == np.uint32
    assert codes.tolist() == [0, 0xFFFFFF, 0x010203, 0xFF0080]
    np.testing.assert_array_equal(unpack_codes(codes), rgb)


def test_histogram_counts_pixels() -> None:
    rgb = gradient_rgb(30, 30)
    hist = color_histogram(pack_rgb(rgb))
    flat = rgb.reshape(-1, 3)
    uniq, counts = np.unique(flat, axis=0, return_counts=True)
    assert len(hist) == len(uniq)
    order = np.lexsort(uniq.T[::-1])
    np.testing.assert_array_equal(hist.colors, uniq[order])
    np.testing.assert_array_equal(hist.counts, counts[order])
    assert hist.n_pixels == 900


@pytest.fixture(params=["compiled", "numpy"])
def lloyd_step(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with scikit-learn's compiled Lloyd step, and again with the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(accel, "_sk_lloyd_step", None)
    else:
        assert accel.compiled_lloyd_step() is not None, "scikit-learn's Lloyd step did not import"
    return str(request.param)


@pytest.mark.parametrize("k", [6, 30])
def test_weighted_lloyd_on_distinct_colours_equals_kmeans_on_all_pixels(
    k: int, lloyd_step: str
) -> None:
    # Few distinct colours, many repeats: the histogram is much smaller than the pixel list.
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, size=(60, 3), dtype=np.uint8)
    rgb = palette[rng.integers(0, 60, size=(50, 40))]
    hist = color_histogram(pack_rgb(rgb))
    assert len(hist) < 100 < rgb.shape[0] * rgb.shape[1]
    x = color_features(hist.colors)
    w = hist.counts.astype(np.float64)
    init = x[rng.choice(len(x), size=k, replace=False)]

    centers, labels, inertia, _ = weighted_lloyd(x, w, init, max_iter=300, tol=0.0)

    pixels = color_features(rgb.reshape(-1, 3))
    km = KMeans(n_clusters=k, init=init, n_init=1, tol=0.0, max_iter=300, algorithm="lloyd").fit(
        pixels
    )
    np.testing.assert_allclose(centers, km.cluster_centers_, atol=1e-6, rtol=0)
    pixel_labels = labels[np.searchsorted(hist.codes, pack_rgb(rgb))]
    np.testing.assert_array_equal(pixel_labels, km.labels_)
    assert inertia == pytest.approx(km.inertia_, rel=1e-9)


def photo_colours() -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours (fixed features) and pixel counts of a real photo."""
    from skimage import data

    hist = color_histogram(pack_rgb(data.astronaut()))
    return color_features(hist.colors), hist.counts.astype(np.float64)


@pytest.mark.parametrize("k", [2, 16, 64])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_compiled_and_numpy_lloyd_take_the_same_steps(
    k: int, tol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, w = photo_colours()
    init = cluster.kmeans_plusplus(x, w, k, np.random.default_rng(k))
    assert accel.compiled_lloyd_step() is not None
    compiled = weighted_lloyd(x, w, init, tol=tol)
    monkeypatch.setattr(accel, "_sk_lloyd_step", None)
    plain = weighted_lloyd(x, w, init, tol=tol)
    np.testing.assert_array_equal(compiled[1], plain[1])
    np.testing.assert_allclose(compiled[0], plain[0], rtol=0, atol=1e-12)
    assert compiled[2] == pytest.approx(plain[2], rel=1e-12)
    assert compiled[3] == plain[3]


def test_two_threads_are_reproducible() -> None:
    assert accel.compiled_lloyd_step() is not None  # threads are the compiled step's
    rgb = skimage_photo()
    runs = [cluster_image(rgb, k=16, seed=3, n_threads=2) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_array_equal(runs[0].centers, runs[1].centers)
    one = cluster_image(rgb, k=16, seed=3, n_threads=1)
    # Another summation order, the same clustering to within rounding.
    assert one.inertia == pytest.approx(runs[0].inertia, rel=1e-3)


def skimage_photo() -> np.ndarray:
    from skimage import data

    return np.asarray(data.coffee())


def test_lloyd_relocates_empty_cluster(lloyd_step: str) -> None:
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    w = np.ones(4)
    init = np.array([[0.0], [0.05], [100.0]])  # the third centre attracts nothing
    centers, labels, _, _ = weighted_lloyd(x, w, init, tol=0.0)
    assert len(np.unique(labels)) == 3
    assert centers[2, 0] < 6


def test_kmeans_plusplus_picks_distinct_rows() -> None:
    x = color_features(gradient_rgb().reshape(-1, 3))
    centers = cluster.kmeans_plusplus(x, np.ones(len(x)), 8, np.random.default_rng(0))
    assert centers.shape == (8, 3)
    assert len(np.unique(centers, axis=0)) == 8


def test_deterministic(small_rgb: np.ndarray) -> None:
    a = cluster_image(small_rgb, k=5, seed=7)
    b = cluster_image(small_rgb, k=5, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


def test_labels_ordered_by_size(small_rgb: np.ndarray) -> None:
    c = cluster_image(small_rgb, k=8)
    counts = np.bincount(c.labels.ravel(), minlength=c.k)
    np.testing.assert_array_equal(counts, c.counts)
    assert (np.diff(counts) <= 0).all()
    assert c.labels.max() == c.k - 1


def test_size_ties_broken_by_colour() -> None:
    # Two colours, equal pixel counts: the lower packed colour gets label 0, whatever order
    # the pixels come in.
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0] = [200, 0, 0]
    flipped = rgb[::-1].copy()
    for img in (rgb, flipped):
        c = cluster_image(img, k=2)
        assert c.centers.tolist() == [[0, 0, 0], [200, 0, 0]]


def test_fewer_colours_than_k_gives_effective_k() -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[:, :3] = [10, 20, 30]
    rgb[:1, :1] = [255, 255, 255]
    c = cluster_image(rgb, k=16)
    assert c.k == 3
    assert c.inertia == 0
    assert c.counts.tolist() == [70, 29, 1]
    assert c.centers.tolist() == [[0, 0, 0], [10, 20, 30], [255, 255, 255]]


def test_one_colour() -> None:
    c = cluster_image(np.full((5, 7, 3), 42, dtype=np.uint8), k=16)
    assert c.k == 1 and c.centers.tolist() == [[42, 42, 42]]
    assert (c.labels == 0).all()


def test_inertia_is_rgb_distance_of_recolor(small_rgb: np.ndarray) -> None:
    for normalize in ("fixed", "minmax", "none"):
        c = cluster_image(small_rgb, k=4, normalize=normalize, color_space="lab")
        diff = small_rgb.astype(np.int64) - c.centers[c.labels].astype(np.int64)
        assert c.inertia == int((diff**2).sum())


def test_fixed_and_none_cluster_alike_in_rgb(small_rgb: np.ndarray) -> None:
    # (c + 1) / 256 is a uniform affine map, to which K-Means is invariant.
    a = cluster_image(small_rgb, k=4, normalize="fixed")
    b = cluster_image(small_rgb, k=4, normalize="none")
    np.testing.assert_array_equal(a.labels, b.labels)


def test_features() -> None:
    colors = np.array([[0, 0, 0], [255, 128, 10]], dtype=np.uint8)
    np.testing.assert_allclose(color_features(colors, normalize="fixed"), (colors + 1.0) / 256)
    np.testing.assert_allclose(color_features(colors, normalize="none"), colors)
    np.testing.assert_allclose(color_features(colors, normalize="minmax"), [[0, 0, 0], [1, 1, 1]])
    lab = color_features(colors, normalize="none", color_space="lab")
    assert lab[0].tolist() == pytest.approx([0, 0, 0], abs=1e-9)
    np.testing.assert_allclose(
        color_features(colors, normalize="fixed", color_space="lab"), lab / 100
    )


def test_max_side_fits_small_labels_full(small_rgb: np.ndarray) -> None:
    big = np.repeat(np.repeat(small_rgb, 4, axis=0), 4, axis=1)  # 96 x 128
    c = cluster_image(big, k=6, max_side=32)
    assert c.labels.shape == (96, 128)
    assert c.counts.sum() == 96 * 128
    diff = big.astype(np.int64) - c.centers[c.labels].astype(np.int64)
    assert c.inertia == int((diff**2).sum())


def test_kneedle_picks_the_elbow() -> None:
    ks = np.arange(2, 9)
    inertia = np.array([100, 40, 12, 10, 9, 8.5, 8])
    scores = kneedle_scores(ks, inertia)
    assert int(ks[np.argmax(scores)]) == 4
    assert scores[0] == 0 and scores[-1] == pytest.approx(0)


def test_auto_k_scores_every_k_and_picks_in_range() -> None:
    # Four well separated colour blobs: the elbow is at 4.
    rng = np.random.default_rng(0)
    base = np.array([[20, 20, 20], [230, 30, 30], [30, 220, 40], [40, 40, 230]])
    idx = rng.integers(0, 4, size=(40, 40))
    rgb = np.clip(base[idx] + rng.integers(-8, 9, size=(40, 40, 3)), 0, 255).astype(np.uint8)
    c = cluster_image(rgb, k="auto", k_min=2, k_max=9)
    assert [s["k"] for s in c.k_scores] == list(range(2, 10))
    assert all({"k", "inertia", "score"} <= set(s) for s in c.k_scores)
    assert c.k == 4
    inertias = [s["inertia"] for s in c.k_scores]
    assert inertias[0] > inertias[2]


def test_auto_k_on_one_colour() -> None:
    c = cluster_image(np.zeros((4, 4, 3), dtype=np.uint8), k="auto", k_min=2, k_max=5)
    assert c.k == 1
    assert [s["k"] for s in c.k_scores] == [2, 3, 4, 5]


def test_sampled_seeding_path_matches_quality() -> None:
    # More distinct colours than the seeding sample: seeding on a sample, refining on all.
    rgb = gradient_rgb(120, 160, seed=2)
    hist = color_histogram(pack_rgb(rgb))
    assert len(hist) > 2000
    small = cluster_image(rgb, k=8, sample_size=2000)
    full = cluster_image(rgb, k=8, sample_size=10**6)
    assert small.inertia <= full.inertia * 1.02


def test_result_is_a_lloyd_fixed_point(lloyd_step: str) -> None:
    # Many colours (the coarse stage and the sample seeding both run): every colour is
    # labelled by its nearest centre, and each centre is its cluster's weighted mean.
    rng = np.random.default_rng(5)
    blobs = rng.integers(20, 236, size=(20, 3))
    pixels = blobs[rng.integers(0, 20, size=120_000)] + rng.normal(0, 4, size=(120_000, 3))
    rgb = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(300, 400, 3)
    hist = color_histogram(pack_rgb(rgb))
    x = color_features(hist.colors)
    w = hist.counts.astype(np.float64)
    groups = cluster.coarse_groups(hist.colors)
    assert len(np.unique(groups)) <= len(hist) // 2  # the coarse stage really runs
    fit = cluster.fit_kmeans(x, w, 12, sample_size=3000, tol=0.0, groups=groups)
    assert fit.n_iter_coarse >= 1
    nearest, _ = cluster.nearest_center(x, fit.centers)
    np.testing.assert_array_equal(fit.labels, nearest)
    means, _ = cluster._weighted_means(x, w, fit.labels, 12)
    np.testing.assert_allclose(fit.centers, means, atol=1e-12)


def test_k_over_256_refused(small_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError):
        cluster_image(small_rgb, k=257)


def test_a_one_shot_segmentation_does_not_import_scikit_learn(tmp_path: Path) -> None:
    # Importing scikit-learn takes seconds; `kseg segment` on one image must not pay for it.
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from kseg.shared.core.segment import segment\n"
        "from kseg.shared.core.params import parse_params\n"
        "rgb = (np.arange(64 * 48 * 3) % 251).astype(np.uint8).reshape(64, 48, 3)\n"
        "segment(rgb, parse_params(k=4))\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "False"
