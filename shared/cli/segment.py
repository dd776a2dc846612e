"""``kseg segment IMAGE [options]``: the segmentation core from the command line, no service.

:func:`add_segment_parser` adds the sub-command to the ``kseg`` command's parser
(:mod:`.service`); :func:`run_segment` runs it. ``python -m kseg.shared.cli.segment IMAGE``
runs the same command on its own.

Exit codes: 0 success, 1 the image cannot be used (empty, not an image, damaged, too large)
or cannot be written, 2 a usage error (bad option or parameter, missing file). Errors are one
line on stderr starting ``kseg: error:``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from kseg.shared.core import palette as palettes
from kseg.shared.core.allocator import retain_freed_memory
from kseg.shared.core.params import (
    AUTO_K_MAX,
    AUTO_K_MIN,
    K_MAX,
    K_MIN,
    OUTPUT_NAMES,
    SegmentParams,
    parse_params,
)
from kseg.shared.errors import ImageError, InvalidParameterError
from kseg.shared.settings import get_settings

__all__ = [
    "add_param_arguments",
    "add_segment_parser",
    "build_parser",
    "main",
    "params_from_args",
    "print_quietly_on_broken_pipe",
    "run_segment",
    "summary",
    "usage_error",
    "write_result",
]

EXIT_OK, EXIT_IMAGE, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Segment IMAGE by K-Means clustering of its pixel colours and write the result images (PNG)
and result.json (k, inertia, mse, psnr, the palette, timings) into OUTDIR.
Outputs: labels (grey, pixel = label), gray (label i as grey int(256/(i+1))-1),
color (label2rgb colours), recolor (each pixel its cluster's colour), overlay (the image
with cluster boundaries in yellow). Label 0 is the largest cluster.
"""


def usage_error(prog: str) -> Callable[[str], NoReturn]:
    """An argparse ``error`` hook for command ``prog``: one line naming ``prog --help``
    instead of usage + error, exit 2."""

    def error(message: str) -> NoReturn:
        print(f"kseg: error: {message} (see `{prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    return error


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """The segmentation parameters as options (``kseg segment`` and ``kseg submit``); read
    them back with :func:`params_from_args`."""
    parser.add_argument(
        "-k",
        "--k",
        dest="k",
        default="16",
        metavar="K",
        help=f"number of clusters, {K_MIN}..{K_MAX}, or 'auto' to pick one in "
        "--k-min..--k-max by the elbow of the inertia curve (default: 16)",
    )
    parser.add_argument(
        "--k-min",
        type=int,
        default=2,
        metavar="N",
        help=f"smallest k tried by -k auto, {AUTO_K_MIN}..{AUTO_K_MAX} (default: 2)",
    )
    parser.add_argument(
        "--k-max",
        type=int,
        default=12,
        metavar="N",
        help=f"largest k tried by -k auto, {AUTO_K_MIN}..{AUTO_K_MAX} (default: 12)",
    )
    parser.add_argument(
        "--normalize",
        choices=("minmax", "fixed", "none"),
        default="fixed",
        help="feature scaling: per-channel min-max, the fixed (c+1)/256, or raw 0..255 "
        "(default: fixed)",
    )
    parser.add_argument(
        "--color-space",
        choices=("rgb", "lab"),
        default="rgb",
        help="space the colours are clustered in; lab is perceptual (default: rgb)",
    )
    parser.add_argument(
        "--outputs",
        default=",".join(OUTPUT_NAMES),
        metavar="LIST",
        help=f"comma-separated result images to write, of {', '.join(OUTPUT_NAMES)} "
        "(default: all five)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="N",
        help="fit on a copy whose longer side is at most N px (>= 16), faster on big images; "
        "results stay full size (default: fit on the full image)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed; the same image and options give the same result (default: 0)",
    )


def add_outdir_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-o", "--outdir", type=Path, default=None, metavar="OUTDIR", help=help_text)


def params_from_args(args: argparse.Namespace) -> SegmentParams:
    """The :class:`SegmentParams` of :func:`add_param_arguments`'s options; raises
    :class:`InvalidParameterError` with the service's own message for a bad value."""
    return parse_params(**{name: getattr(args, name) for name in SegmentParams.model_fields})


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.error = usage_error("kseg segment")  # type: ignore[method-assign]
    parser.add_argument(
        "image", metavar="IMAGE", help="image file (PNG, JPEG, GIF, WebP, TIFF, BMP)"
    )
    add_param_arguments(parser)
    add_outdir_argument(
        parser,
        "directory for the PNGs and result.json, created if missing "
        "(default: ./<image stem>-kseg/)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on success",
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


def summary(name: str, outdir: Path, written: list[Path], result: dict[str, Any]) -> str:
    """What ``kseg segment`` and ``kseg submit`` print for a result: size, k, quality,
    times, the palette and the files written. Keys the result lacks are left out."""
    psnr = "inf" if result.get("psnr") is None else f"{result['psnr']:.2f} dB"
    head = f"{name}:"
    if "width" in result and "height" in result:
        head += f" {result['width']}x{result['height']},"
    if "n_colors" in result:
        head += f" {result['n_colors']:,} colours"
    head += f" -> k={result['k']}, PSNR {psnr}"
    if result.get("mse") is not None:
        head += f", MSE {result['mse']:.1f}"
    if result.get("n_iter") is not None:
        head += f", {result['n_iter']} iteration{'' if result['n_iter'] == 1 else 's'}"
    lines = [head]
    t = result.get("timings_ms") or {}
    stages = [f"{stage} {t[stage]:.0f} ms" for stage in ("decode", "fit", "render") if stage in t]
    if "total" in t:
        stages.append(f"total {t['total']:.0f} ms")
    if stages:
        lines.append(f"time: {', '.join(stages)}")
    if "k_scores" in result:
        scores = ", ".join(f"{s['k']}:{s['score']:.2f}" for s in result["k_scores"])
        lines.append(f"auto k (kneedle score per k): {scores}")
    lines.append("palette:")
    for label, c in enumerate(palettes.colors(result.get("clusters", []))):
        lines.append(f"  {label:>3}  {c['hex']}  {c['percent']:5.1f}%  {c['name']}")
    lines.append(f"wrote {', '.join(p.name for p in written)} to {outdir}/")
    return "\n".join(lines)


def write_result(outdir: Path, outputs: dict[str, bytes], result: dict[str, Any]) -> list[Path]:
    """Write each output as ``outdir/<name>.png`` and ``result`` as ``outdir/result.json``
    (``outdir`` created if missing); returns the paths written. Raises :class:`OSError`."""
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, png in outputs.items():
        path = outdir / f"{name}.png"
        path.write_bytes(png)
        written.append(path)
    path = outdir / "result.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    written.append(path)
    return written


def print_quietly_on_broken_pipe(text: str) -> None:
    """Print ``text``; a reader that left early (``kseg ... | head``) is no error: the
    files are written. stdout then points at devnull, so the final flush fails no more."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_segment(args: argparse.Namespace) -> int:
    """Run ``kseg segment`` with parsed arguments; returns the exit code."""
    from kseg.shared.core.segment import segment  # deferred: keeps `kseg --help` fast

    retain_freed_memory(get_settings().malloc_retain_bytes)  # as the worker does
    image = Path(args.image)
    try:
        params = params_from_args(args)
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
    result = {"image": str(image), "params": params.canonical(), **seg.result}
    try:
        written = write_result(outdir, seg.outputs, result)
    except OSError as exc:
        return _fail(f"cannot write to {outdir}: {exc.strerror or exc}", EXIT_IMAGE)
    if not args.quiet:
        print_quietly_on_broken_pipe(summary(image.name, outdir, written, seg.result))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kseg.shared.cli.segment IMAGE [options]``."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse: usage errors exit 2 with one "error:" line
    return run_segment(args)


if __name__ == "__main__":
    raise SystemExit(main())
