"""The segmentation parameter set of the API contract (``shared/API.md``), validated once.

The same pydantic model validates job submissions, gallery defaults and schedules, and its
JSON schema is what the OpenAPI document publishes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kseg.shared.errors import InvalidParameterError

OutputName = Literal["labels", "gray", "color", "recolor", "overlay"]
OUTPUT_NAMES: tuple[OutputName, ...] = ("labels", "gray", "color", "recolor", "overlay")
Normalize = Literal["minmax", "fixed", "none"]
ColorSpace = Literal["rgb", "lab"]

K_MIN, K_MAX = 2, 256
AUTO_K_MIN, AUTO_K_MAX = 2, 64


def _shown(value: Any) -> str:
    """``value`` for an error message, safely: ``f"{10**400:g}"`` raises OverflowError, and
    ``str()`` of an int over 4,300 digits raises ValueError."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a number of {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, int | float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}…"


class SegmentParams(BaseModel):
    """Parameters of one segmentation. Defaults are the contract's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: Annotated[int, Field(ge=K_MIN, le=K_MAX, strict=False)] | Literal["auto"] = Field(
        16, description='Number of clusters (2..256), or "auto" to search k_min..k_max.'
    )
    k_min: int = Field(2, ge=AUTO_K_MIN, le=AUTO_K_MAX, description="Smallest k tried by auto.")
    k_max: int = Field(12, ge=AUTO_K_MIN, le=AUTO_K_MAX, description="Largest k tried by auto.")
    normalize: Normalize = Field(
        "fixed",
        description="minmax: per-channel min-max scaling; fixed: (c+1)/256; none: raw 0..255.",
    )
    color_space: ColorSpace = Field("rgb", description="Space the pixels are clustered in.")
    outputs: list[OutputName] = Field(
        default_factory=lambda: list(OUTPUT_NAMES),
        min_length=1,
        description="Result images to render.",
    )
    # The upper bound only keeps absurd numbers out of the database: no image kseg accepts
    # is that large (JPEG's own limit), so any value above its sides means "full size".
    max_side: int | None = Field(
        None,
        ge=16,
        le=65535,
        description="Fit on a copy whose longer side is at most this (px).",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random state.")

    @field_validator("k", mode="before")
    @classmethod
    def _k_text(cls, value: Any) -> Any:
        expected = f'must be an integer {K_MIN}..{K_MAX} or "auto"'
        if isinstance(value, bool):
            raise ValueError(f"{expected}, not a boolean")
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "auto":
                return "auto"
            try:
                value = int(text)
            except ValueError:  # also Python's 4,300-digit limit on int(str)
                raise ValueError(f"{expected}, not {_shown(value)}") from None
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{expected}, not {_shown(value)}")
        if isinstance(value, int | float) and value < K_MIN:
            raise ValueError(f'must be at least {K_MIN} (or "auto"), not {_shown(value)}')
        if isinstance(value, int | float) and value > K_MAX:
            raise ValueError(f"must be at most {K_MAX}, not {_shown(value)}")
        return value

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_canonical(cls, value: list[str]) -> list[str]:
        # Canonical order and no repeats, so equal requests compare (and dedupe) equal.
        return [name for name in OUTPUT_NAMES if name in set(value)]

    @field_validator("max_side", mode="before")
    @classmethod
    def _max_side_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "null", "none"}:
            return None
        return value

    @model_validator(mode="after")
    def _range(self) -> SegmentParams:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        return self

    def canonical(self) -> dict[str, Any]:
        """JSON-ready dict; ``k_min``/``k_max`` only when ``k`` is auto (they do nothing else)."""
        data = self.model_dump()
        if self.k != "auto":
            data.pop("k_min")
            data.pop("k_max")
        return data

    def cluster_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`kseg.shared.core.cluster.cluster_image` that these
        parameters set (all but ``outputs``, which only rendering reads)."""
        return self.model_dump(exclude={"outputs"})


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc", ())
    where = str(loc[0]) if loc else ""  # the field; deeper parts name pydantic's union branches
    msg = str(error.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if len(msg) > 200:  # pydantic may quote the whole input
        msg = msg[:197] + "…"
    return f"{where}: {msg}" if where else msg


def parse_params(data: dict[str, Any] | None = None, **overrides: Any) -> SegmentParams:
    """Validate parameters; raise :class:`InvalidParameterError` with one clear line."""
    merged = {**(data or {}), **overrides}
    try:
        return SegmentParams.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidParameterError(_describe(dict(first))) from None
