"""Benchmark of kseg's segmentation core against the tutorial and plain scikit-learn.

Methods, on the same images in one run:

* (a) the tutorial: a ``getpixel`` loop builds the pixel list, scikit-learn ``KMeans``
  fit/predict on it, a ``putpixel`` loop paints the recolor image, Pillow saves it.
  Only on images up to ~1 MP (it is that slow).
* (b) vectorised scikit-learn: ``KMeans(k, n_init="auto", random_state=0)`` fitted on all
  pixels scaled by the fixed ``(c + 1) / 256``; labels from the fit.
* (c) kseg's core (:func:`shared.cluster.cluster_image`, same fixed scaling, seed 0).

"Clustering stage" = from the decoded RGB array to a label for every pixel (for (c): packing,
distinct-colour counting, fitting, lookup-table labelling). MSE is the contract's: mean over
pixels of the squared 0..255 RGB distance between the original and the recolor image (summed
over the three channels). (c) times are the best of ``--repeat`` runs; (b) and (a) run once
(they take seconds to a minute each).

Usage::

    python bench/bench_core.py              # everything (several minutes)
    python bench/bench_core.py --quick      # small images and 1 MP, k = 2 and 16, no (a)
    python bench/bench_core.py --images china1mp --ks 16 --methods b,c

Helper modes used for the whole-process measurements (each run as its own subprocess):
``--process-b FILE --k K --out PNG`` runs (b) end to end, writing only recolor.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED_IMAGES = Path("/work/shared/images")
ALL_IMAGES = ("baby", "weixin", "astronaut", "coffee", "chelsea", "china1mp", "china12mp")
SMALL_MAX_PIXELS = 1_100_000  # (a) runs up to the 1 MP image


# --------------------------------------------------------------------------------------------
# Images


def prepare_images(names: list[str], workdir: Path) -> dict[str, Path]:
    """Write the benchmark images into ``workdir``; returns name -> file."""
    from PIL import Image

    paths: dict[str, Path] = {}
    for name in names:
        if name in ("baby", "weixin"):
            paths[name] = SEED_IMAGES / f"{name}.jpg"
        elif name in ("astronaut", "coffee", "chelsea"):
            from skimage import data

            path = workdir / f"{name}.png"
            Image.fromarray(getattr(data, name)()).save(path)
            paths[name] = path
        elif name in ("china1mp", "china12mp"):
            from sklearn.datasets import load_sample_image

            china = Image.fromarray(load_sample_image("china.jpg"))
            if name == "china12mp":
                size = (4000, 3000)
            else:
                scale = math.sqrt(1_000_000 / (china.width * china.height))
                size = (round(china.width * scale), round(china.height * scale))
            path = workdir / f"{name}.jpg"
            china.resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
            paths[name] = path
        else:
            raise SystemExit(f"bench: unknown image {name!r}; choose from {', '.join(ALL_IMAGES)}")
    return paths


def decode(path: Path) -> Any:
    from kseg.shared.core.imageio import load_image

    return load_image(path, max_pixels=10**9)


# --------------------------------------------------------------------------------------------
# Methods: each returns (clustering-stage seconds, recolor array)


def to_recolor(centers_fixed: Any) -> Any:
    """Centres in the fixed ``(c + 1) / 256`` scale -> uint8 RGB (the tutorial's inverse)."""
    import numpy as np

    return np.clip(np.rint(np.asarray(centers_fixed) * 256.0 - 1.0), 0, 255).astype(np.uint8)


def method_a(path: Path, k: int, out_png: Path | None = None) -> tuple[float, Any, float]:
    """The tutorial, loops and all. Returns (stage s, recolor array, end-to-end s)."""
    import numpy as np
    from PIL import Image
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    img = Image.open(path).convert("RGB")
    width, height = img.size
    t1 = time.perf_counter()
    pixels = []
    for y in range(height):
        for x in range(width):
            r, g, b = img.getpixel((x, y))
            pixels.append([(r + 1) / 256, (g + 1) / 256, (b + 1) / 256])
    km = KMeans(n_clusters=k, n_init="auto", random_state=0).fit(pixels)
    labels = km.predict(pixels)
    palette = [tuple(int(v) for v in c) for c in to_recolor(km.cluster_centers_)]
    out = Image.new("RGB", (width, height))
    i = 0
    for y in range(height):
        for x in range(width):
            out.putpixel((x, y), palette[labels[i]])
            i += 1
    t2 = time.perf_counter()
    if out_png is not None:
        out.save(out_png)
    t3 = time.perf_counter()
    return t2 - t1, np.asarray(out), t3 - t0


def method_b(rgb: Any, k: int) -> tuple[float, Any]:
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    x = (rgb.reshape(-1, 3).astype("float64") + 1.0) / 256.0
    km = KMeans(n_clusters=k, n_init="auto", random_state=0).fit(x)
    labels = km.labels_
    t1 = time.perf_counter()
    return t1 - t0, to_recolor(km.cluster_centers_)[labels].reshape(rgb.shape)


def method_c(rgb: Any, k: int) -> tuple[float, Any]:
    from kseg.shared.core.cluster import cluster_image

    t0 = time.perf_counter()
    c = cluster_image(rgb, k=k, normalize="fixed", seed=0)
    t1 = time.perf_counter()
    return t1 - t0, c.centers[c.labels]


def mse(rgb: Any, recolor: Any) -> float:
    """Mean over pixels of the squared RGB distance (summed over channels)."""
    import numpy as np

    diff = rgb.astype(np.int64) - recolor.astype(np.int64)
    return float((diff * diff).sum() / (rgb.shape[0] * rgb.shape[1]))


def best_of(repeat: int, fn: Callable[[], tuple[float, Any]]) -> tuple[float, Any]:
    best: tuple[float, Any] | None = None
    for _ in range(repeat):
        out = fn()
        if best is None or out[0] < best[0]:
            best = out
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------
# Subprocess measurements


def process_b(path: Path, k: int, out: Path) -> None:
    """(b) end to end in this process: decode, fit on all pixels, recolor, save PNG."""
    import numpy as np
    from PIL import Image
    from sklearn.cluster import KMeans

    rgb = np.asarray(Image.open(path).convert("RGB"))
    x = (rgb.reshape(-1, 3).astype(np.float64) + 1.0) / 256.0
    km = KMeans(n_clusters=k, n_init="auto", random_state=0).fit(x)
    recolor = to_recolor(km.cluster_centers_)[km.labels_].reshape(rgb.shape)
    Image.fromarray(recolor).save(out)


def stage_times(path: Path, repeat: int) -> dict[str, float]:
    """Helper mode: best (fit + render) ``segment()`` timings at k=16, after one warm-up."""
    from kseg.shared.core.params import parse_params
    from kseg.shared.core.segment import prepare_for_many_jobs, segment
    from kseg.shared.settings import get_settings

    prepare_for_many_jobs(get_settings().malloc_retain_bytes)  # as the worker does at start-up
    params = parse_params(k=16)
    segment(path, params)
    runs = [segment(path, params).result["timings_ms"] for _ in range(repeat)]
    return min(runs, key=lambda tm: tm["fit"] + tm["render"])


def recolor_c(path: Path, repeat: int, out: Path) -> dict[str, float]:
    """Helper mode: best decode → cluster → recolor PNG written, k=16, after one warm-up."""
    from kseg.shared.core.params import parse_params
    from kseg.shared.core.segment import prepare_for_many_jobs, segment
    from kseg.shared.settings import get_settings

    prepare_for_many_jobs(get_settings().malloc_retain_bytes)  # as the worker does at start-up
    params = parse_params(k=16, outputs="recolor")
    segment(path, params)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out.write_bytes(segment(path, params).outputs["recolor"])
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best}


def helper_json(options: list[str]) -> dict[str, float]:
    """Run this script in a helper mode in a fresh process; its JSON answer."""
    import json

    cmd = [sys.executable, str(Path(__file__).resolve()), *options]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class ProcessRun:
    wall_s: float
    max_rss_mib: float
    returncode: int


def measure_child(cmd: list[str]) -> None:
    """Helper mode: run ``cmd``, print ``wall_s max_rss_kib returncode`` of that child.

    Runs in a fresh, small process: Linux counts the memory a forked child had before
    ``exec`` in its peak RSS, so measuring straight from this (large) benchmark process would
    report the benchmark's own size.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"bench: {' '.join(cmd)} failed: {err.strip()}", file=sys.stderr)
    print(f"{wall:.6f} {usage.ru_maxrss} {code}")


def run_process(cmd: list[str]) -> ProcessRun:
    """Wall time and peak RSS of ``cmd``, measured by a small helper process."""
    helper = [sys.executable, "-S", str(Path(__file__).resolve()), "--measure", "--", *cmd]
    out = subprocess.run(helper, capture_output=True, text=True, check=False)
    if out.stderr:
        print(out.stderr.strip(), file=sys.stderr)
    wall, rss_kib, code = out.stdout.split()
    return ProcessRun(float(wall), int(rss_kib) / 1024.0, int(code))


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    image: str
    size: str
    k: int
    t: dict[str, float]
    err: dict[str, float]


def fmt_s(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def fmt_e(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images",
        default=",".join(ALL_IMAGES),
        help=f"comma-separated images (default: all: {','.join(ALL_IMAGES)})",
    )
    parser.add_argument("--ks", default="2,16,64", help="comma-separated k (default: 2,16,64)")
    parser.add_argument("--methods", default="a,b,c", help="of a,b,c (default: a,b,c)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (c), best kept (3)")
    parser.add_argument(
        "--quick", action="store_true", help="small images and 1 MP only, k 2 and 16, methods b,c"
    )
    parser.add_argument(
        "--no-process", action="store_true", help="skip the whole-process wall time / peak RSS runs"
    )
    parser.add_argument("--process-b", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage-times", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--recolor-a", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--recolor-c", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        measure_child([part for part in args.cmd if part != "--"])
        return 0
    if args.stage_times or args.recolor_a or args.recolor_c:
        import json

        if args.stage_times:
            answer = stage_times(args.stage_times, args.repeat)
        elif args.recolor_a:
            out = Path(tempfile.mkdtemp(prefix="kseg-bench-")) / "a.png"
            answer = {"seconds": method_a(args.recolor_a, 16, out)[2]}
        else:
            out = Path(tempfile.mkdtemp(prefix="kseg-bench-")) / "c.png"
            answer = recolor_c(args.recolor_c, args.repeat, out)
        print(json.dumps(answer))
        return 0
    if args.process_b is not None:
        process_b(args.process_b, args.k, args.out or Path(os.devnull))
        return 0

    names = [n for n in args.images.split(",") if n]
    ks = [int(v) for v in args.ks.split(",") if v]
    methods = set(args.methods.split(","))
    if args.quick:
        names = [n for n in names if n != "china12mp"]
        ks = [k for k in ks if k <= 16] or [16]
        methods -= {"a"}

    workdir = Path(tempfile.mkdtemp(prefix="kseg-bench-"))
    paths = prepare_images(names, workdir)
    print(
        f"# kseg core benchmark\n\nmachine: {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; images in {workdir}\n"
    )

    # warm-up so import and first-call costs are not billed to the first image
    import numpy as np

    from kseg.shared.core.cluster import cluster_image
    from kseg.shared.core.segment import prepare_for_many_jobs
    from kseg.shared.settings import get_settings

    # (c) is the core as the worker runs it: with the compiled Lloyd step and the worker's
    # allocator setting, which (a) and (b), run in this process too, share.
    prepare_for_many_jobs(get_settings().malloc_retain_bytes)
    cluster_image(
        np.zeros((8, 8, 3), dtype=np.uint8) + np.arange(8, dtype=np.uint8)[:, None, None], k=2
    )

    rows: list[Row] = []
    for name in names:
        rgb = decode(paths[name])
        n_px = rgb.shape[0] * rgb.shape[1]
        for k in ks:
            t: dict[str, float] = {}
            err: dict[str, float] = {}
            # (c) first, after a pause: scikit-learn's OpenMP/BLAS threads keep spinning for
            # a while after a fit, and would be billed to whatever runs next.
            if "c" in methods:
                time.sleep(0.5)
                t["c"], rec = best_of(args.repeat, lambda rgb=rgb, k=k: method_c(rgb, k))
                err["c"] = mse(rgb, rec)
            if "b" in methods:
                t["b"], rec = method_b(rgb, k)
                err["b"] = mse(rgb, rec)
            if "a" in methods and n_px <= SMALL_MAX_PIXELS:
                t["a"], rec, _ = method_a(paths[name], k)
                err["a"] = mse(rgb, rec)
            rows.append(Row(name, f"{rgb.shape[1]}x{rgb.shape[0]}", k, t, err))
            print(
                f"  {name} k={k}: "
                + ", ".join(f"{m} {t[m]:.3f}s mse {err[m]:.1f}" for m in sorted(t)),
                file=sys.stderr,
            )

    print("## Clustering stage and quality\n")
    print(
        "| image | size | k | (a) s | (b) s | (c) s | (b)/(c) | MSE (a) | MSE (b) | MSE (c) "
        "| MSE (c)/(b) | ≤ 1.01 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    checks: list[tuple[str, bool, str]] = []
    for r in rows:
        ratio = r.err["c"] / r.err["b"] if "b" in r.err and "c" in r.err and r.err["b"] else None
        speed = r.t["b"] / r.t["c"] if "b" in r.t and "c" in r.t else None
        ok = ratio is None or ratio <= 1.01 or r.err["c"] <= r.err["b"]
        print(
            f"| {r.image} | {r.size} | {r.k} | {fmt_s(r.t.get('a'))} | {fmt_s(r.t.get('b'))} "
            f"| {fmt_s(r.t.get('c'))} | {'–' if speed is None else f'{speed:.1f}×'} "
            f"| {fmt_e(r.err.get('a'))} | {fmt_e(r.err.get('b'))} | {fmt_e(r.err.get('c'))} "
            f"| {'–' if ratio is None else f'{ratio:.4f}'} | {verdict(ok)} |"
        )
    mse_ok = all(r.err["c"] <= 1.01 * r.err["b"] for r in rows if "b" in r.err and "c" in r.err)
    checks.append(("MSE(c) ≤ 1.01 × MSE(b), every image and k", mse_ok, ""))

    for k, need in ((16, 20.0), (64, 30.0)):
        row = next(
            (r for r in rows if r.image == "china12mp" and r.k == k and "b" in r.t and "c" in r.t),
            None,
        )
        if row is not None:
            speed = row.t["b"] / row.t["c"]
            checks.append(
                (
                    f"clustering stage 12 MP k={k} ≥ {need:.0f}× faster than (b)",
                    speed >= need,
                    f"(b) {row.t['b']:.2f} s, (c) {row.t['c']:.3f} s: {speed:.1f}×",
                )
            )

    if "china1mp" in paths:
        # Each in a fresh process (warmed up inside), so no state of the runs above counts.
        best = helper_json(
            ["--stage-times", str(paths["china1mp"]), "--repeat", str(max(args.repeat, 3))]
        )
        fr = best["fit"] + best["render"]
        print(
            "\n## 1 MP, k=16, `segment()` stage times (all five outputs; fresh process, "
            "best of runs after a warm-up)\n"
        )
        print("| decode ms | fit ms | render ms | total ms |\n|---|---|---|---|")
        print(
            f"| {best['decode']:.0f} | {best['fit']:.0f} | {best['render']:.0f} "
            f"| {best['total']:.0f} |"
        )
        checks.append(("1 MP k=16 fit + render ≤ 300 ms", fr <= 300, f"{fr:.0f} ms"))

        if "a" in methods:
            t_a = helper_json(["--recolor-a", str(paths["china1mp"])])["seconds"]
            t_c = helper_json(
                ["--recolor-c", str(paths["china1mp"]), "--repeat", str(max(args.repeat, 3))]
            )["seconds"]
            print(
                "\n## 1 MP, k=16, decode → cluster → recolor PNG (fresh processes; (c) best "
                "of runs after a warm-up, (a) one run)\n"
            )
            print(
                f"| (a) tutorial s | (c) kseg s | (a)/(c) |\n|---|---|---|\n"
                f"| {t_a:.2f} | {t_c:.3f} | {t_a / t_c:.1f}× |"
            )
            checks.append(
                (
                    "(c) ≥ 30× faster than (a), 1 MP decode → recolor PNG",
                    t_a / t_c >= 30,
                    f"{t_a:.2f} s vs {t_c:.3f} s: {t_a / t_c:.1f}×",
                )
            )

    if "china12mp" in paths and not args.no_process:
        py = sys.executable
        outdir = workdir / "proc-c"
        c_run = run_process(
            [
                py,
                "-m",
                "kseg.shared.cli.segment",
                str(paths["china12mp"]),
                "-k",
                "16",
                "-o",
                str(outdir),
                "--quiet",
            ]
        )
        b_run = run_process(
            [
                py,
                str(Path(__file__).resolve()),
                "--process-b",
                str(paths["china12mp"]),
                "--k",
                "16",
                "--out",
                str(workdir / "proc-b.png"),
            ]
        )
        print("\n## 12 MP JPEG, k=16, whole process (subprocess; wall time and peak RSS)\n")
        print("| process | wall s | peak RSS MiB |\n|---|---|---|")
        print(
            f"| kseg segment, all five PNGs + result.json | {c_run.wall_s:.2f} "
            f"| {c_run.max_rss_mib:.0f} |"
        )
        print(f"| (b) sklearn, recolor PNG only | {b_run.wall_s:.2f} | {b_run.max_rss_mib:.0f} |")
        checks.append(
            (
                "whole kseg process ≤ 1/4 of (b)'s wall time",
                c_run.wall_s * 4 <= b_run.wall_s,
                f"{c_run.wall_s:.2f} s vs {b_run.wall_s:.2f} s: {b_run.wall_s / c_run.wall_s:.1f}×",
            )
        )
        checks.append(
            (
                "peak RSS at 12 MP ≤ 0.6 × (b)'s",
                c_run.max_rss_mib <= 0.6 * b_run.max_rss_mib,
                f"{c_run.max_rss_mib:.0f} MiB vs {b_run.max_rss_mib:.0f} MiB: "
                f"{c_run.max_rss_mib / b_run.max_rss_mib:.2f}×",
            )
        )

    print("\n## Targets\n\n| target | result | measured |\n|---|---|---|")
    for label, ok, detail in checks:
        print(f"| {label} | {verdict(ok)} | {detail} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
