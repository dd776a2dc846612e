"""Pydantic models of the API's request and response bodies.

They validate what comes in, shape what goes out, and are the source of the OpenAPI document
(:mod:`web.api.openapi`), so the published schema cannot drift from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.params import SegmentParams

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case error code.", examples=["invalid_parameter"])
    message: str = Field(description="What went wrong and what to do about it.")


class Error(BaseModel):
    """The body of every 4xx/5xx answer under /api/."""

    error: ErrorDetail


# ---------------------------------------------------------------- requests


class JobSubmitJson(SegmentParams):
    """``POST /api/v1/jobs`` with a JSON body: an uploaded image's id plus parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="JobSubmitJson")

    image_id: str = Field(min_length=1, max_length=64, description="Id of an uploaded image.")
    reuse: bool = Field(
        True,
        description="Reuse the result of an identical finished job (same image, parameters and "
        "algorithm version) instead of computing again; the job is then born succeeded.",
    )


class JobSubmitForm(SegmentParams):
    """``POST /api/v1/jobs`` as multipart/form-data: the image in part ``file`` and the
    parameters as form fields (``outputs`` comma-separated or repeated)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="JobSubmitForm")

    file: bytes = Field(description="The image (JPEG, PNG, GIF, WebP, TIFF, BMP, …).")
    reuse: bool = Field(True, description="As in the JSON form.")


class ImageUploadForm(BaseModel):
    """``POST /api/v1/images``: one or more parts named ``file``."""

    model_config = ConfigDict(title="ImageUploadForm")

    file: list[bytes] = Field(min_length=1, description="One or more images, each a part `file`.")


# ---------------------------------------------------------------- responses


class ImageRef(BaseModel):
    """The image a job segments."""

    id: str
    filename: str
    width: int
    height: int


class ImageLinks(BaseModel):
    self: str
    file: str


class ImageOut(BaseModel):
    """An uploaded image (deduplicated per owner by content)."""

    id: str
    filename: str
    width: int = Field(description="Width after EXIF orientation (px).")
    height: int = Field(description="Height after EXIF orientation (px).")
    content_type: str
    format: str
    size_bytes: int
    sha256: str
    created_at: datetime
    links: ImageLinks


class JobError(BaseModel):
    code: str
    message: str


class Cluster(BaseModel):
    model_config = ConfigDict(extra="allow")

    label: int
    rgb: list[int]
    hex: str
    name: str
    pixels: int
    fraction: float


class KScore(BaseModel):
    model_config = ConfigDict(extra="allow")

    k: int
    inertia: float
    score: float


class JobResult(BaseModel):
    """Present when the job succeeded. ``k_scores`` only when ``k`` was ``"auto"``."""

    model_config = ConfigDict(extra="allow")

    k: int
    inertia: float | None = None
    mse: float | None = None
    psnr: float | None = None
    n_iter: int | None = None
    clusters: list[Cluster] = Field(default_factory=list)
    k_scores: list[KScore] | None = None
    outputs: dict[str, str] = Field(
        description="Output name → URL of its PNG (GET /api/v1/jobs/{id}/outputs/{name}.png)."
    )
    timings_ms: dict[str, float] | None = None


class JobLinks(BaseModel):
    self: str
    image: str


class JobOut(BaseModel):
    """A segmentation job. ``progress`` is 0..100 and never decreases."""

    id: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    stage: str | None = Field(None, description="Current step (decode, fit, render, done, …).")
    attempts: int = Field(0, description="How many times a worker started this job.")
    params: dict[str, Any] = Field(
        description="The canonical parameters (see SegmentParams); k_min/k_max only for k=auto."
    )
    image: ImageRef
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    result: JobResult | None
    reused_from: str | None = Field(
        None, description="Id of the earlier identical job whose result this job shares."
    )
    links: JobLinks


class JobList(BaseModel):
    items: list[JobOut]
    next: str | None = Field(description="Cursor of the next page, or null on the last page.")


class ImageList(BaseModel):
    items: list[ImageOut]
    next: str | None = Field(None, description="Cursor of the next page, or null.")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """Readiness: each dependency is ``ok`` or ``error: <why>``."""

    status: Literal["ready", "not_ready"]
    database: str
    broker: str
    workers: str = Field(
        description="Fresh worker heartbeats (information only unless ?workers=1)."
    )
    fresh_workers: int | None = None


REQUEST_MODELS: tuple[type[BaseModel], ...] = (JobSubmitJson, JobSubmitForm, ImageUploadForm)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    JobOut,
    JobList,
    ImageOut,
    ImageList,
    Health,
    Ready,
    SegmentParams,
)
