"""segment(): outputs, metrics, palette, progress, determinism; the renderers against skimage."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from conftest import encode, gradient_rgb
from PIL import Image

from kseg.shared.core import render
from kseg.shared.core.params import OUTPUT_NAMES, parse_params
from kseg.shared.core.segment import ALGORITHM_VERSION, Segmentation, segment
from kseg.shared.errors import CorruptImageError, EmptyImageError, InvalidParameterError


def decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    img.load()
    return img


@pytest.fixture
def seg(baby_bytes: bytes) -> Segmentation:
    return segment(baby_bytes, parse_params(k=16))


def test_outputs_size_and_mode(seg: Segmentation) -> None:
    assert set(seg.outputs) == set(OUTPUT_NAMES)
    # color and recolor are palette PNGs: at most 256 colours by construction.
    modes = {"labels": "L", "gray": "L", "color": "P", "recolor": "P", "overlay": "RGB"}
    for name, png in seg.outputs.items():
        img = decode(png)
        assert img.size == (seg.width, seg.height) == (100, 133), name
        assert img.mode == modes[name], name


def test_only_requested_outputs(small_png: bytes) -> None:
    s = segment(small_png, parse_params(k=3, outputs="recolor,labels"))
    assert list(s.outputs) == ["labels", "recolor"]


def test_labels_png_is_label_map(seg: Segmentation) -> None:
    np.testing.assert_array_equal(np.asarray(decode(seg.outputs["labels"])), seg.labels)


def test_gray_levels_are_the_tutorials(seg: Segmentation) -> None:
    gray = np.asarray(decode(seg.outputs["gray"]))
    expected = {int(256 / (i + 1)) - 1 for i in range(seg.result["k"])}
    assert set(np.unique(gray).tolist()) == expected
    assert (gray[seg.labels == 0] == 255).all() and (gray[seg.labels == 1] == 127).all()


def test_recolor_paints_reported_rgb(seg: Segmentation) -> None:
    recolor = np.asarray(decode(seg.outputs["recolor"]).convert("RGB"))
    for c in seg.result["clusters"]:
        mask = seg.labels == c["label"]
        assert mask.sum() == c["pixels"]
        assert (recolor[mask] == c["rgb"]).all()
        assert c["hex"] == "#{:02x}{:02x}{:02x}".format(*c["rgb"])


def test_mse_recomputed_from_recolor(seg: Segmentation, baby_bytes: bytes) -> None:
    original = np.asarray(Image.open(io.BytesIO(baby_bytes)).convert("RGB"), dtype=np.int64)
    recolor = np.asarray(decode(seg.outputs["recolor"]).convert("RGB"), dtype=np.int64)
    sq = ((original - recolor) ** 2).sum()
    assert seg.result["inertia"] == sq
    assert seg.result["mse"] == pytest.approx(sq / (100 * 133), rel=1e-12)
    per_channel = sq / original.size
    assert seg.result["psnr"] == pytest.approx(10 * math.log10(255**2 / per_channel), rel=1e-9)


def test_clusters_ordered_and_fractions(seg: Segmentation) -> None:
    clusters = seg.result["clusters"]
    assert [c["label"] for c in clusters] == list(range(seg.result["k"]))
    fractions = [c["fraction"] for c in clusters]
    assert fractions == sorted(fractions, reverse=True)
    assert sum(c["pixels"] for c in clusters) == 100 * 133
    assert sum(fractions) == pytest.approx(1.0, abs=1e-4)
    assert all(isinstance(c["name"], str) and c["name"] for c in clusters)


def test_result_is_json_and_complete(seg: Segmentation) -> None:
    data = json.loads(json.dumps(seg.result, allow_nan=False))
    assert {"k", "inertia", "mse", "psnr", "n_iter", "clusters", "timings_ms"} <= set(data)
    assert set(data["timings_ms"]) == {"decode", "fit", "render", "total", "cpu"}
    assert "k_scores" not in data
    assert data["algorithm_version"] == ALGORITHM_VERSION
    assert data["k"] == 16 and data["n_iter"] >= 1


def test_color_output_equals_label2rgb(seg: Segmentation) -> None:
    from skimage.color import label2rgb

    expected = np.rint(label2rgb(seg.labels.astype(np.int64), bg_label=-1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(decode(seg.outputs["color"]).convert("RGB")), expected)


def test_label2rgb_palette_literal_matches_skimage() -> None:
    from skimage.color import label2rgb

    labels = np.arange(30).reshape(1, 30)
    expected = np.rint(label2rgb(labels, bg_label=-1) * 255).astype(np.uint8)[0]
    np.testing.assert_array_equal(render.render_color(labels.astype(np.uint8))[0], expected)


def test_overlay_equals_mark_boundaries(seg: Segmentation, baby_bytes: bytes) -> None:
    from skimage.segmentation import mark_boundaries

    original = np.asarray(Image.open(io.BytesIO(baby_bytes)).convert("RGB"))
    expected = np.rint(mark_boundaries(original, seg.labels, mode="thick") * 255)
    np.testing.assert_array_equal(np.asarray(decode(seg.outputs["overlay"])), expected)


def test_deterministic_bytes(baby_bytes: bytes) -> None:
    params = parse_params(k=8, seed=3)
    a, b = segment(baby_bytes, params), segment(baby_bytes, params)
    assert a.outputs == b.outputs
    assert a.result["clusters"] == b.result["clusters"]


def test_seed_changes_are_allowed_but_results_valid(baby_bytes: bytes) -> None:
    s = segment(baby_bytes, parse_params(k=8, seed=99))
    assert s.result["k"] == 8


def test_one_colour_image_effective_k() -> None:
    png = encode(Image.new("RGB", (9, 7), (12, 200, 99)))
    s = segment(png, parse_params(k=16))
    assert s.result["k"] == 1
    assert s.result["mse"] == 0 and s.result["psnr"] is None
    assert s.result["clusters"][0]["rgb"] == [12, 200, 99]
    assert s.result["clusters"][0]["fraction"] == 1.0
    assert np.asarray(decode(s.outputs["gray"])).max() == 255


def test_one_by_one_image() -> None:
    s = segment(encode(Image.new("RGB", (1, 1), (5, 6, 7))))
    assert (s.width, s.height) == (1, 1) and s.result["k"] == 1


@pytest.mark.parametrize("k", [1, 257, 0, "x"])
def test_k_bounds_refused(k: object) -> None:
    with pytest.raises(InvalidParameterError):
        parse_params(k=k)


def test_auto_k(baby_bytes: bytes) -> None:
    s = segment(baby_bytes, parse_params(k="auto", k_min=2, k_max=8))
    scores = s.result["k_scores"]
    assert [r["k"] for r in scores] == list(range(2, 9))
    assert 2 <= s.result["k"] <= 8
    best = max(scores, key=lambda r: r["score"])
    assert best["k"] == s.result["k"]


def test_max_side_full_size_outputs(baby_bytes: bytes) -> None:
    s = segment(baby_bytes, parse_params(k=6, max_side=32))
    assert s.labels.shape == (133, 100)
    for png in s.outputs.values():
        assert decode(png).size == (100, 133)


def test_lab_colour_space(baby_bytes: bytes) -> None:
    s = segment(baby_bytes, parse_params(k=6, color_space="lab"))
    assert s.result["k"] == 6
    rgb = segment(baby_bytes, parse_params(k=6))
    assert s.result["clusters"] != rgb.result["clusters"]


def test_progress_monotonic(baby_bytes: bytes) -> None:
    seen: list[tuple[str, int]] = []
    segment(baby_bytes, parse_params(k="auto", k_max=5), progress=lambda s, p: seen.append((s, p)))
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100
    assert seen[0][0] == "decode"
    assert {s for s, _ in seen} == {"decode", "fit", "render"}
    stages = [s for s, _ in seen]
    assert stages.index("render") > max(i for i, s in enumerate(stages) if s == "fit")


def test_errors_propagate_typed() -> None:
    with pytest.raises(EmptyImageError):
        segment(b"")
    data = encode(Image.fromarray(gradient_rgb(64, 64)), "JPEG")
    with pytest.raises(CorruptImageError):
        segment(data[:300])


def test_rgba_and_array_sources() -> None:
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:3, :, 3] = 255
    s = segment(rgba, parse_params(k=2))
    assert sorted(c["hex"] for c in s.result["clusters"]) == ["#ff0000", "#ffffff"]


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 5, 3), (1, 9, 3), (64, 33)])
def test_png_encoder_roundtrip(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    img = decode(render.encode_png(pixels))
    assert img.mode == ("L" if len(shape) == 2 else "RGB")
    np.testing.assert_array_equal(np.asarray(img), pixels)


@pytest.mark.parametrize("n_colors", [1, 2, 16, 256])
def test_palette_png_decodes_to_the_palette_colours(n_colors: int) -> None:
    rng = np.random.default_rng(n_colors)
    palette = rng.integers(0, 256, size=(n_colors, 3), dtype=np.uint8)
    index = rng.integers(0, n_colors, size=(37, 23), dtype=np.uint8)
    img = decode(render.encode_png(index, palette=palette))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), palette[index])


def test_palette_png_refuses_indices_past_the_palette() -> None:
    with pytest.raises(ValueError, match="out of range"):
        render.encode_png(np.full((2, 2), 3, np.uint8), palette=np.zeros((3, 3), np.uint8))


def _idat(png: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG."""
    import struct

    pos, out = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            out += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return out


def test_label_map_outputs_share_one_payload_and_decode_to_their_colours() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, size=(40, 30), dtype=np.uint8)
    centers = rng.integers(0, 256, size=(5, 3), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    for workers in (1, 2):
        out = render.render_outputs(
            ["labels", "gray", "color", "recolor", "overlay"],
            labels,
            centers,
            rgb,
            workers=workers,
        )
        assert _idat(out["labels"]) == _idat(out["color"]) == _idat(out["recolor"])
        np.testing.assert_array_equal(np.asarray(decode(out["labels"])), labels)
        np.testing.assert_array_equal(
            np.asarray(decode(out["recolor"]).convert("RGB")), centers[labels]
        )
        np.testing.assert_array_equal(np.asarray(decode(out["gray"])), render.gray_levels()[labels])


def test_split_png_cuts_before_the_image_data() -> None:
    rng = np.random.default_rng(5)
    index = rng.integers(0, 4, size=(9, 11), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)
    grey, paletted = render.encode_png(index), render.encode_png(index, palette=palette)
    grey_head, grey_body = render.split_png(grey)
    head, body = render.split_png(paletted)
    assert grey_head + grey_body == grey and head + body == paletted
    assert body == grey_body and body[4:8] == b"IDAT" and body.endswith(b"IEND\xaeB`\x82")
    assert b"PLTE" in head and b"PLTE" not in grey_head
    with pytest.raises(ValueError, match="not a PNG"):
        render.split_png(b"GIF89a")
    with pytest.raises(ValueError, match="without image data"):
        render.split_png(grey_head)
