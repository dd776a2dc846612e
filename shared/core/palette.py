"""A result's cluster colours as palette files: JSON, CSS custom properties, a GIMP palette
(``.gpl``) and an Adobe Swatch Exchange file (``.ase``). Pure functions of the result's
``clusters`` (label order: label 0 is the largest cluster).

ASE layout (big-endian): ``ASEF``, version 1.0 (two uint16), the block count (uint32), then
per colour a block: type ``0x0001`` (uint16), its length (uint32), the name's length in
UTF-16 code units including the terminating NUL (uint16), the name in UTF-16BE with that
NUL, the colour model ``RGB `` (4 bytes), R, G, B as float32 in 0..1, and the colour type
(uint16: 0 global, 1 spot, 2 normal; kseg writes 2).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS: dict[str, str] = {
    "json": "application/json",
    "css": "text/css; charset=utf-8",
    "gpl": "text/plain; charset=utf-8",
    "ase": "application/octet-stream",
}

ASE_COLOR_ENTRY = 0x0001
ASE_NORMAL = 2


def percents(fractions: Sequence[float], digits: int = 1) -> list[float]:
    """Fractions as percentages rounded to ``digits`` decimals that add up to exactly 100
    (largest-remainder rounding): the one rounding the pages, the CLI and the palette files
    show, so their numbers agree with each other and with a bar of the shares."""
    if not fractions:
        return []
    scale = 10**digits
    total = sum(fractions) or 1.0
    raw = [f / total * 100 * scale for f in fractions]
    floors = [math.floor(r) for r in raw]
    short = 100 * scale - sum(floors)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - floors[i], reverse=True)
    for i in order[: max(0, short)]:
        floors[i] += 1
    return [f / scale for f in floors]


def distinct_names(names: Sequence[str]) -> list[str]:
    """Colour names made unique in order: a name that comes again is numbered from its second
    use (``black``, ``black 2``, ``black 3``), so five near-blacks can be told apart."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 or not name else f"{name} {seen[name]}")
    return out


def colors(clusters: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"hex", "rgb", "name", "fraction", "percent"}]`` in label order; names made
    distinct, percentages as :func:`percents` rounds them."""
    ordered = sorted(clusters, key=lambda c: int(c.get("label", 0)))
    names = distinct_names([str(c.get("name") or "") for c in ordered])
    shares = [float(c.get("fraction") or 0.0) for c in ordered]
    out = []
    for cluster, name, share, pct in zip(ordered, names, shares, percents(shares), strict=True):
        r, g, b = (int(v) for v in cluster["rgb"])
        out.append(
            {
                "hex": str(cluster.get("hex") or f"#{r:02x}{g:02x}{b:02x}").lower(),
                "rgb": [r, g, b],
                "name": name,
                "fraction": share,
                "percent": pct,
            }
        )
    return out


def to_json(palette: list[dict[str, Any]]) -> bytes:
    return json.dumps(palette, indent=2).encode() + b"\n"


def to_css(palette: list[dict[str, Any]], title: str = "kseg palette") -> bytes:
    """``:root { --kseg-0: #rrggbb; … }``, each with its name and share as a comment."""
    safe = title.replace("*/", "* /")
    lines = [f"/* {safe} */", ":root {"]
    for i, color in enumerate(palette):
        note = f"{color['name']}, {color['percent']:.1f} %".replace("*/", "* /")
        lines.append(f"  --kseg-{i}: {color['hex']}; /* {note} */")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode()


def _label(color: dict[str, Any], index: int) -> str:
    name = color["name"] or color["hex"]
    return f"{index} {name} {color['hex']}"


def to_gpl(palette: list[dict[str, Any]], title: str = "kseg palette") -> bytes:
    """A GIMP palette: header, ``Name:``, ``Columns:``, then ``R G B<TAB>name`` lines."""
    name = " ".join(title.split()) or "kseg palette"
    lines = ["GIMP Palette", f"Name: {name}", f"Columns: {min(len(palette), 16) or 1}", "#"]
    for i, color in enumerate(palette):
        r, g, b = color["rgb"]
        lines.append(f"{r:3d} {g:3d} {b:3d}\t{_label(color, i)}")
    return ("\n".join(lines) + "\n").encode()


def to_ase(palette: list[dict[str, Any]]) -> bytes:
    """An Adobe Swatch Exchange file of colour entries (RGB, normal), no groups."""
    blocks = []
    for i, color in enumerate(palette):
        name = _label(color, i).encode("utf-16-be") + b"\x00\x00"
        units = len(name) // 2
        r, g, b = (v / 255.0 for v in color["rgb"])
        body = (
            struct.pack(">H", units)
            + name
            + b"RGB "
            + struct.pack(">fff", r, g, b)
            + struct.pack(">H", ASE_NORMAL)
        )
        blocks.append(struct.pack(">HI", ASE_COLOR_ENTRY, len(body)) + body)
    return b"ASEF" + struct.pack(">HHI", 1, 0, len(blocks)) + b"".join(blocks)


def encode(fmt: str, clusters: Sequence[Mapping[str, Any]], title: str = "kseg palette") -> bytes:
    """The palette file of format ``fmt`` (a key of :data:`FORMATS`)."""
    palette = colors(clusters)
    match fmt:
        case "json":
            return to_json(palette)
        case "css":
            return to_css(palette, title)
        case "gpl":
            return to_gpl(palette, title)
        case "ase":
            return to_ase(palette)
    raise ValueError(f"unknown palette format {fmt!r}; one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "colors", "encode", "to_ase", "to_css", "to_gpl", "to_json"]
