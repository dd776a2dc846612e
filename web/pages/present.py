"""Pure helpers that shape jobs and results for the templates (no Flask, no database)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from kseg.shared.core import palette as palettes
from kseg.shared.core.params import OUTPUT_NAMES, SegmentParams
from kseg.shared.settings import TRUE

# ---------------------------------------------------------------- formatting (Jinja filters)


def when(value: str | datetime | None) -> str:
    """``2024-05-01 12:03 UTC`` from an ISO string or datetime; the page's JS localises it."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f} %"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


# ---------------------------------------------------------------- the form


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    help: str


_DEFAULTS = SegmentParams()

FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("file", "Images", "One job per file. PNG, JPEG, GIF, WebP, TIFF or BMP."),
        Field(
            "k",
            "Clusters (k)",
            "How many colours to reduce the image to, 2–256 — or let kseg choose (auto).",
        ),
        Field("k_min", "Smallest k", "Auto searches k_min..k_max (2 ≤ k_min ≤ k_max ≤ 64)."),
        Field("k_max", "Largest k", "The largest k auto tries; larger ranges take longer."),
        Field(
            "normalize",
            "Normalize",
            "How pixel values are scaled before clustering.",
        ),
        Field(
            "color_space",
            "Colour space",
            "Cluster in RGB, or in CIELAB (perceptual: distances match how colours look).",
        ),
        Field("outputs", "Outputs", "Which result images to render."),
        Field(
            "max_side",
            "Max side (px)",
            "Cluster on a copy at most this long (≥ 16) — faster on big photos. "
            "Results stay full size. Empty: no limit.",
        ),
        Field("seed", "Seed", "Random state: the same image and parameters give the same result."),
        Field(
            "reuse",
            "Reuse identical results",
            "If this image was already segmented with these parameters, show that result "
            "at once instead of computing it again.",
        ),
    )
}

NORMALIZE_CHOICES = (
    ("fixed", "fixed — the same scale for every image"),
    ("minmax", "minmax — stretch each channel to its own range"),
    ("none", "none — raw values"),
)
COLOR_SPACE_CHOICES = (("rgb", "RGB"), ("lab", "CIELAB"))
OUTPUT_HELP = {
    "labels": "label map for programs (pixel value = cluster number)",
    "gray": "labels as greys",
    "color": "a colour per label",
    "recolor": "each pixel as its cluster's colour",
    "overlay": "region boundaries on the original",
}
PARAM_KEYS = ("k", "k_min", "k_max", "normalize", "color_space", "max_side", "seed")


def default_form() -> dict[str, Any]:
    """The form's values as strings (and ``outputs`` as a list), at the contract's defaults."""
    return {
        "k_mode": "number",
        "k": str(_DEFAULTS.k),
        "k_min": str(_DEFAULTS.k_min),
        "k_max": str(_DEFAULTS.k_max),
        "normalize": _DEFAULTS.normalize,
        "color_space": _DEFAULTS.color_space,
        "outputs": list(_DEFAULTS.outputs),
        "max_side": "",
        "seed": str(_DEFAULTS.seed),
        "reuse": True,
    }


def form_from(args: Any, *, submitted: bool) -> dict[str, Any]:
    """Form values from a query string (run again) or a posted form (``submitted``).

    A query string fills in what it names and keeps the defaults for the rest; a posted form
    is taken as it is (an unchecked box is absent, so no outputs means none were ticked).
    """
    values = default_form()
    for key in PARAM_KEYS:
        raw = args.get(key)
        if raw is not None:
            values[key] = str(raw).strip()[:100]
    if str(values["k"]).lower() == "auto":
        values["k_mode"] = "auto"
        values["k"] = str(_DEFAULTS.k)
    mode = args.get("k_mode")
    if mode in ("number", "auto"):
        values["k_mode"] = mode
    if submitted or "outputs" in args:
        values["outputs"] = [o for o in args.getlist("outputs") if o in OUTPUT_NAMES]
    if submitted:
        values["reuse"] = args.get("reuse") in TRUE
    return values


def params_input(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values as :func:`shared.params.parse_params` input."""
    data: dict[str, Any] = {
        "normalize": values["normalize"],
        "color_space": values["color_space"],
        "outputs": values["outputs"],
        "max_side": values["max_side"] or None,
        "seed": values["seed"],
    }
    if values["k_mode"] == "auto":
        data.update(k="auto", k_min=values["k_min"], k_max=values["k_max"])
    else:
        data["k"] = values["k"]
    return data


_PYDANTIC_WORDS = [
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be a valid integer.*"), "must be a whole number"),
    (re.compile(r"Input should be (.*)"), r"must be \1"),
]


def field_error(message: str) -> tuple[str, str]:
    """Split ``"field: what's wrong"`` (as :class:`InvalidParameterError` words it) into the
    field it belongs to (``"_form"`` when none) and a sentence to show next to it."""
    head, sep, rest = message.partition(": ")
    if sep and head in FIELDS:
        field, text = head, rest
    else:
        field = next((name for name in FIELDS if message.startswith(name + " ")), "_form")
        text = message
    if field == "outputs" and ("at least 1" in text or "too_short" in text):
        text = "tick at least one output"
    k_range = re.search(r"k_min \((\d+)\) must not exceed k_max \((\d+)\)", text)
    if k_range:  # the form labels the range "from" and "to"
        text = f"“from” ({k_range[1]}) must not exceed “to” ({k_range[2]})"
    for pattern, replacement in _PYDANTIC_WORDS:
        text = pattern.sub(replacement, text)
    text = text.strip()
    if not re.match(r"(k|k_min|k_max|max_side)\b", text):  # names keep their case
        text = text[:1].upper() + text[1:]
    if text and text[-1] not in ".!?":
        text += "."
    return field, text


def run_again_url(base: str, image_id: str, params: dict[str, Any]) -> str:
    """The submit page pre-filled with this job's image and parameters."""
    query: list[tuple[str, str]] = [("image_id", image_id)]
    for key in PARAM_KEYS:
        value = params.get(key)
        if value is not None:
            query.append((key, str(value)))
    query.extend(("outputs", name) for name in params.get("outputs") or [])
    return f"{base}?{urlencode(query)}"


def params_summary(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Short ``(name, value)`` pairs of a job's parameters, for badges and tables."""
    k = params.get("k")
    rows = [("k", f"auto {params.get('k_min')}–{params.get('k_max')}" if k == "auto" else str(k))]
    rows.append(("normalize", str(params.get("normalize"))))
    rows.append(("colour space", str(params.get("color_space", "")).upper()))
    if params.get("max_side"):
        rows.append(("max side", f"{params['max_side']} px"))
    rows.append(("seed", str(params.get("seed"))))
    outputs = params.get("outputs") or []
    if outputs and list(outputs) != list(OUTPUT_NAMES):
        rows.append(("outputs", ", ".join(outputs)))
    return rows


# ---------------------------------------------------------------- results


def palette(clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result's clusters with their palette-file colour (distinct name, the shared
    percentage rounding: :func:`kseg.shared.core.palette.colors`) and a readable text colour."""
    ordered = sorted(clusters, key=lambda c: int(c.get("label", 0)))
    rows = []
    for cluster, color in zip(ordered, palettes.colors(ordered), strict=True):
        r, g, b = color["rgb"]
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        rows.append({**cluster, **color, "ink": "#111" if luminance > 140 else "#fff"})
    return rows


@dataclass(frozen=True)
class Chart:
    """Geometry of the k-score chart (an inline SVG drawn by the template)."""

    width: int
    height: int
    left: int
    top: int
    plot_w: float
    plot_h: float
    bars: list[dict[str, Any]]
    line: str
    chosen: int
    y_ticks: list[dict[str, Any]]


def k_chart(k_scores: list[dict[str, Any]], chosen: int) -> Chart | None:
    """Bars of the score per k (the chosen k highlighted) and the scaled inertia curve."""
    rows = sorted(
        (row for row in k_scores if isinstance(row.get("k"), int | float)),
        key=lambda row: row["k"],
    )
    if not rows:
        return None
    width, height, left, top, bottom, right = 640, 260, 52, 16, 40, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / len(rows)
    scores = [max(0.0, float(row.get("score") or 0.0)) for row in rows]
    top_score = max(scores) or 1.0
    inertias = [float(row.get("inertia") or 0.0) for row in rows]
    lo, hi = min(inertias), max(inertias)
    span = (hi - lo) or 1.0
    bars, points = [], []
    for i, (row, score, inertia) in enumerate(zip(rows, scores, inertias, strict=True)):
        x = left + i * step
        h = score / top_score * plot_h
        cx = x + step / 2
        bars.append(
            {
                "k": int(row["k"]),
                "score": score,
                "inertia": inertia,
                "x": round(x + step * 0.15, 2),
                "w": round(step * 0.7, 2),
                "y": round(top + plot_h - h, 2),
                "h": round(h, 2),
                "cx": round(cx, 2),
                "chosen": int(row["k"]) == chosen,
            }
        )
        iy = top + (1 - (inertia - lo) / span) * plot_h
        points.append(f"{cx:.2f},{iy:.2f}")
    ticks = [
        {"y": round(top + plot_h - frac * plot_h, 2), "label": f"{top_score * frac:.2f}"}
        for frac in (0.0, 0.5, 1.0)
    ]
    return Chart(width, height, left, top, plot_w, plot_h, bars, " ".join(points), chosen, ticks)


def metrics(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("k", str(result.get("k")))]
    if result.get("inertia") is not None:
        rows.append(("inertia", f"{result['inertia']:,.0f}"))
    if result.get("mse") is not None:
        rows.append(("MSE per pixel", f"{result['mse']:.2f}"))
    psnr = result.get("psnr")
    rows.append(("PSNR", "∞ (lossless)" if psnr is None else f"{psnr:.2f} dB"))
    if result.get("n_iter") is not None:
        rows.append(("refinement steps", f"{result['n_iter']} (until the colours settled)"))
    if result.get("n_colors") is not None:
        rows.append(("distinct colours", f"{result['n_colors']:,}"))
    return rows


def timings(result: dict[str, Any]) -> list[tuple[str, float]]:
    raw = result.get("timings_ms") or {}
    order = ["decode", "fit", "render", "total"]
    # "cpu" is not a stage (it is the core's CPU time over all of them).
    keys = [k for k in order if k in raw] + sorted(k for k in raw if k not in [*order, "cpu"])
    return [(k, float(raw[k])) for k in keys if isinstance(raw[k], int | float)]


STATUS_TEXT = {
    "queued": "Queued",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "canceled": "Canceled",
}

FAILURE_ADVICE = {
    "too_many_attempts": "Try again with a smaller max side, or a smaller image.",
    "image_too_large": "Scale the image down, or set a max side, and run it again.",
    "timeout": "Set a max side (e.g. 1024) so clustering runs on a smaller copy.",
    "out_of_memory": "Set a max side (e.g. 1024) so clustering runs on a smaller copy.",
    "internal_error": "This is a bug in kseg: report it with the job id. Other parameters "
    "may work meanwhile.",
}


def advice(code: str | None) -> str:
    return FAILURE_ADVICE.get(
        code or "",
        "Check the image and the parameters, then run it again. If it fails again, "
        "tell the operator the job id.",
    )


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"


#: Thumbnail sizes by what shows them (see kseg.shared.core.thumbnail): list rows' 56–72 px
#: tiles, and the 150–240 px tiles of grids and covers, each at 2x pixel density.
ROW_THUMB = 160
GRID_THUMB = 480

_FULL_SIZE = re.compile(r"(/api/v1/images/[^/?#]+)/file|(/api/v1/jobs/[^/?#]+/outputs/[a-z]+)\.png")


def thumb(url: str, size: int = ROW_THUMB) -> str:
    """The thumbnail of a full-size image URL of the API — an original's ``…/file`` or an
    output's ``…/outputs/<name>.png`` — at ``size`` px; other URLs as they are. (kseg.js has
    the same mapping for the images it swaps in.)"""
    match = _FULL_SIZE.fullmatch(url)
    if match is None:
        return url
    return f"{match.group(1) or match.group(2)}/thumbnail?size={size}"


def thumbnail_url(obj: dict[str, Any], size: int = ROW_THUMB) -> str:
    """A job object's tile image: a thumbnail of its recolor output when it has one, else of
    the original."""
    outputs = (obj.get("result") or {}).get("outputs") or {}
    return thumb(str(outputs.get("recolor") or f"/api/v1/images/{obj['image']['id']}/file"), size)
