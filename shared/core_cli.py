"""``kseg segment IMAGE [options]``: the segmentation core from the command line, no service.

:func:`add_segment_parser` adds the sub-command to the ``kseg`` console script's parser
(``shared/cli.py``); :func:`run_segment` runs it. ``python -m shared.core_cli IMAGE ...`` runs
the same command on its own.

Exit codes: 0 success, 1 the image cannot be used (empty, not an image, damaged, too large)
or cannot be written, 2 a usage error (bad option or parameter, missing file). Errors are one
line on stderr starting ``kseg: error:``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.allocator import retain_freed_memory
from shared.errors import ImageError, InvalidParameterError
from shared.params import AUTO_K_MAX, AUTO_K_MIN, K_MAX, K_MIN, OUTPUT_NAMES, parse_params
from shared.settings import get_settings

__all__ = ["add_segment_parser", "build_parser", "main", "run_segment"]

EXIT_OK, EXIT_IMAGE, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Segment IMAGE by K-Means clustering of its pixel colours and write the result images (PNG)
and result.json (k, inertia, mse, psnr, the palette, timings) into OUTDIR.
Outputs: labels (grey, pixel = label), gray (label i as grey int(256/(i+1))-1),
color (label2rgb colours), recolor (each pixel its cluster's colour), overlay (the image
with cluster boundaries in yellow). Label 0 is the largest cluster.
"""


def _usage_error(message: str) -> None:
    """argparse's error hook: one line instead of usage + error, exit 2."""
    print(f"kseg: error: {message} (see `kseg segment --help`)", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.error = _usage_error  # type: ignore[method-assign]
    parser.add_argument(
        "image", metavar="IMAGE", help="image file (PNG, JPEG, GIF, WebP, TIFF, BMP)"
    )
    parser.add_argument(
        "-k", "--k", dest="k", default="16", metavar="K",
        help=f"number of clusters, {K_MIN}..{K_MAX}, or 'auto' to pick one in "
        "--k-min..--k-max by the elbow of the inertia curve (default: 16)",
    )
    parser.add_argument(
        "--k-min", type=int, default=2, metavar="N",
        help=f"smallest k tried by -k auto, {AUTO_K_MIN}..{AUTO_K_MAX} (default: 2)",
    )
    parser.add_argument(
        "--k-max", type=int, default=12, metavar="N",
        help=f"largest k tried by -k auto, {AUTO_K_MIN}..{AUTO_K_MAX} (default: 12)",
    )
    parser.add_argument(
        "--normalize", choices=("minmax", "fixed", "none"), default="fixed",
        help="feature scaling: per-channel min-max, the fixed (c+1)/256, or raw 0..255 "
        "(default: fixed)",
    )
    parser.add_argument(
        "--color-space", choices=("rgb", "lab"), default="rgb",
        help="space the colours are clustered in; lab is perceptual (default: rgb)",
    )
    parser.add_argument(
        "--outputs", default=",".join(OUTPUT_NAMES), metavar="LIST",
        help=f"comma-separated result images to write, of {', '.join(OUTPUT_NAMES)} "
        "(default: all five)",
    )
    parser.add_argument(
        "--max-side", type=int, default=None, metavar="N",
        help="fit on a copy whose longer side is at most N px (>= 16), faster on big images; "
        "results stay full size (default: fit on the full image)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N",
        help="random seed; the same image and options give the same result (default: 0)",
    )
    parser.add_argument(
        "-o", "--outdir", type=Path, default=None, metavar="OUTDIR",
        help="directory for the PNGs and result.json, created if missing "
        "(default: ./<image stem>-kseg/)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing on success",
    )
    parser.set_defaults(func=run_segment)
    return parser


def add_segment_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``segment`` sub-command to an ``argparse`` subparsers object; returns it.

    The sub-parser's defaults carry ``func=run_segment``.
    """
    parser = subparsers.add_parser(
        "segment",
        help="segment one image locally (no service) and write the result images",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(parser)


def build_parser(prog: str = "kseg segment") -> argparse.ArgumentParser:
    """A stand-alone parser for the ``segment`` command."""
    return _configure(
        argparse.ArgumentParser(
            prog=prog,
            description=_DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )


def _fail(message: str, code: int) -> int:
    print(f"kseg: error: {message}", file=sys.stderr)
    return code


def _summary(image: Path, outdir: Path, written: list[Path], result: dict[str, Any]) -> str:
    t = result["timings_ms"]
    psnr = "inf" if result["psnr"] is None else f"{result['psnr']:.2f} dB"
    lines = [
        f"{image.name}: {result['width']}x{result['height']}, {result['n_colors']:,} colours "
        f"-> k={result['k']}, PSNR {psnr}, MSE {result['mse']:.1f}, {result['n_iter']} iterations",
        f"time: decode {t['decode']:.0f} ms, fit {t['fit']:.0f} ms, render {t['render']:.0f} ms,"
        f" total {t['total']:.0f} ms",
    ]
    if "k_scores" in result:
        scores = ", ".join(f"{s['k']}:{s['score']:.2f}" for s in result["k_scores"])
        lines.append(f"auto k (kneedle score per k): {scores}")
    lines.append("palette:")
    for c in result["clusters"]:
        lines.append(
            f"  {c['label']:>3}  {c['hex']}  {c['fraction'] * 100:5.1f}%  {c['name']}"
        )
    lines.append(f"wrote {', '.join(p.name for p in written)} to {outdir}/")
    return "\n".join(lines)


def run_segment(args: argparse.Namespace) -> int:
    """Run ``kseg segment`` with parsed arguments; returns the exit code."""
    from shared.segment import segment  # deferred: keeps `kseg --help` fast

    retain_freed_memory(get_settings().malloc_retain_bytes)  # as the worker does
    image = Path(args.image)
    try:
        params = parse_params(
            k=args.k, k_min=args.k_min, k_max=args.k_max, normalize=args.normalize,
            color_space=args.color_space, outputs=args.outputs, max_side=args.max_side,
            seed=args.seed,
        )
    except InvalidParameterError as exc:
        return _fail(f"{exc.message} (see `kseg segment --help`)", EXIT_USAGE)
    if not image.exists():
        return _fail(f"{image}: no such file; check the path", EXIT_USAGE)
    if image.is_dir():
        return _fail(f"{image}: is a directory; give an image file", EXIT_USAGE)

    try:
        seg = segment(image, params)
    except ImageError as exc:
        return _fail(f"{image}: {exc.message}", EXIT_IMAGE)
    except OSError as exc:
        return _fail(f"{image}: cannot read: {exc.strerror or exc}", EXIT_IMAGE)

    outdir = args.outdir if args.outdir is not None else Path.cwd() / f"{image.stem}-kseg"
    written: list[Path] = []
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        for name, png in seg.outputs.items():
            path = outdir / f"{name}.png"
            path.write_bytes(png)
            written.append(path)
        result = {"image": str(image), "params": params.canonical(), **seg.result}
        path = outdir / "result.json"
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    except OSError as exc:
        return _fail(f"cannot write to {outdir}: {exc.strerror or exc}", EXIT_IMAGE)

    if not args.quiet:
        try:
            print(_summary(image, outdir, written, seg.result), flush=True)
        except BrokenPipeError:
            # The reader left early (`kseg segment ... | head`); the files are written.
            # Point stdout at devnull so the interpreter's final flush does not fail too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.core_cli IMAGE [options]``."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse: usage errors exit 2 with one "error:" line
    return run_segment(args)


if __name__ == "__main__":
    raise SystemExit(main())
