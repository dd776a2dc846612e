"""Pydantic models of the API's request and response bodies.

They validate what comes in, shape what goes out, and are the source of the OpenAPI document
(:mod:`web.api.openapi`), so the published schema cannot drift from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from kseg.shared.core.params import SegmentParams
from kseg.shared.statuses import JobStatus, RunStatus

RunTrigger = Literal["schedule", "manual"]
QueueClass = Literal["interactive", "batch"]
EventType = Literal["job.succeeded", "job.failed", "job.canceled", "run.finished"]
DeliveryStatus = Literal["pending", "succeeded", "failed"]

WEBHOOK_URL_HELP = (
    "An http(s) URL POSTed a signed event on each final status (see Webhooks in the README). "
    "Its host must resolve to public addresses (else 422 `webhook_url_refused`)."
)
WEBHOOK_EVENTS_HELP = (
    "The events wanted (default: all that apply): job.succeeded, job.failed, job.canceled, "
    "run.finished."
)


def _webhook_url() -> Any:
    return Field(None, max_length=2048, description=WEBHOOK_URL_HELP)


class _Webhook(BaseModel):
    """The optional webhook of what a request makes (a job, or a run and its jobs)."""

    webhook_url: str | None = _webhook_url()
    webhook_events: list[EventType] | None = Field(
        None, max_length=4, description=WEBHOOK_EVENTS_HELP
    )


class _RunOptions(_Webhook):
    """What a run (made now, or by a schedule) is asked besides its parameters."""

    only_stale: bool = Field(
        True,
        description="Skip images that already have a succeeded result for the same parameters "
        "and the current algorithm version (in a schedule: an extension).",
    )


class _AsSegmentParams:
    """Publishes a partial parameter set (a dict merged over defaults, validated as a whole
    only once merged) as SegmentParams: every one of its fields has a default, so its schema
    describes any subset exactly."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        params = handler.generate_json_schema.generate_inner(SegmentParams.__pydantic_core_schema__)
        return {
            "anyOf": [params, {"type": "null"}],
            "description": "Segmentation parameters: any subset of SegmentParams.",
        }


PartialParams = Annotated[dict[str, Any] | None, _AsSegmentParams()]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case error code.", examples=["invalid_parameter"])
    message: str = Field(description="What went wrong and what to do about it.")


class Error(BaseModel):
    """The body of every 4xx/5xx answer under /api/."""

    error: ErrorDetail


# ---------------------------------------------------------------- requests


class JobSubmitJson(SegmentParams, _Webhook):
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
    webhook_url: str | None = _webhook_url()
    webhook_events: str | None = Field(
        None, max_length=200, description=WEBHOOK_EVENTS_HELP + " Comma-separated."
    )


class ImageUploadForm(BaseModel):
    """``POST /api/v1/images``: one or more parts named ``file``."""

    model_config = ConfigDict(title="ImageUploadForm")

    file: list[bytes] = Field(min_length=1, description="One or more images, each a part `file`.")


class GalleryCreate(BaseModel):
    """``POST /api/v1/galleries``: a name and default parameters (missing ones: the
    contract's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="GalleryCreate")

    name: str = Field(min_length=1, max_length=200, description="Shown in lists; not unique.")
    params: PartialParams = None


class GalleryUpdate(BaseModel):
    """``PATCH /api/v1/galleries/{id}``: rename and/or change the default parameters.
    ``params`` is merged over the current defaults (JSON merge patch)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="GalleryUpdate")

    name: str | None = Field(None, min_length=1, max_length=200)
    params: PartialParams = None


class GalleryImagesJson(BaseModel):
    """``POST /api/v1/galleries/{id}/images`` with a JSON body: ids of your uploaded images."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="GalleryImagesJson")

    image_ids: list[str] = Field(
        min_length=1, max_length=1000, description="Ids of images you uploaded (1..1000)."
    )


class ScheduleIn(_RunOptions):
    """``PUT /api/v1/galleries/{id}/schedule``: create or replace the gallery's schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ScheduleIn")

    cron: str = Field(
        max_length=120,
        description="Five-field cron expression (minute hour day-of-month month day-of-week), "
        "matched on the wall clock of `timezone`.",
        examples=["0 3 * * *"],
    )
    timezone: str = Field("UTC", max_length=64, description="IANA time zone.")
    params: PartialParams = Field(
        None,
        description="Parameters of scheduled runs, merged over the gallery's defaults when the "
        "schedule is saved; null: the gallery's defaults at the time of each run.",
    )
    enabled: bool = True


class RunCreate(_RunOptions):
    """``POST /api/v1/galleries/{id}/runs``: reprocess the gallery now (an empty body is
    fine)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="RunCreate")

    params: PartialParams = Field(
        None, description="Merged over the gallery's default parameters for this run."
    )


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
    gallery_id: str | None = Field(None, description="The gallery whose run made this job.")
    run_id: str | None = Field(None, description="The gallery run that made this job.")
    queue: QueueClass = Field(
        "interactive",
        description="Its class of work: `interactive` (submitted through POST /jobs) or "
        "`batch` (made by a gallery run). Free workers take waiting interactive jobs first.",
    )
    webhook_url: str | None = Field(None, description="Where its final status is POSTed.")
    webhook_events: list[EventType] | None = Field(
        None, description="The events wanted; null: all that apply."
    )
    links: JobLinks


class JobList(BaseModel):
    items: list[JobOut]
    next: str | None = Field(description="Cursor of the next page, or null on the last page.")


class ImageList(BaseModel):
    items: list[ImageOut]
    next: str | None = Field(None, description="Cursor of the next page, or null.")


class LatestJob(BaseModel):
    """The newest job of the gallery for one image (null when none was made yet)."""

    id: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    recolor_url: str | None = Field(
        description="URL of the `recolor` output once succeeded (null otherwise, or when the "
        "job did not render it)."
    )
    outputs: dict[str, str] = Field(description="Output name → URL, once succeeded.")
    links: dict[str, str]


class GalleryImageOut(ImageOut):
    """An image of a gallery, with the gallery's newest job for it and the job whose state
    and result the gallery shows for it."""

    added_at: datetime = Field(description="When the image was added to the gallery.")
    latest_job: LatestJob | None
    current_job: LatestJob | None = Field(
        None,
        description="The job the gallery's grid shows for the image (null: not segmented "
        "yet), agreeing with the newest run: the gallery's newest job while it is queued or "
        "running, or when the newest run made it; else the image's current result — its "
        "newest succeeded job with the parameters of the newest run or the gallery's "
        "defaults, from a run or a single submission alike (what a run skips as already up "
        "to date); else `latest_job`.",
    )


class GalleryImageList(BaseModel):
    items: list[GalleryImageOut]
    next: str | None = Field(None, description="Cursor of the next page, or null.")


class RunCounts(BaseModel):
    """How the run's images fared. ``failed`` counts canceled jobs too; ``skipped`` are
    images ``only_stale`` left out."""

    total: int = Field(ge=0, description="Images in the gallery when the run started.")
    queued: int = Field(ge=0, description="Jobs not started yet.")
    dispatched: int = Field(
        0,
        ge=0,
        description="Of the queued jobs, those handed to the workers' queue (next in line); "
        "the others wait in the database for their turn (runs are fed a few jobs at a time).",
    )
    running: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    skipped: int = Field(ge=0)


class RunLinks(BaseModel):
    self: str
    gallery: str
    jobs: str
    export: str = Field(description="The run's results as one ZIP file.")


class RunOut(BaseModel):
    """One reprocessing of a gallery. ``running`` until every job ended; then ``succeeded``
    (none failed), ``partial`` (some failed) or ``failed`` (all failed)."""

    id: str
    gallery_id: str
    trigger: RunTrigger
    status: RunStatus
    created_at: datetime
    finished_at: datetime | None
    jobs: RunCounts
    params: dict[str, Any] = Field(description="The canonical parameters of the run's jobs.")
    only_stale: bool
    scheduled_for: datetime | None = Field(
        None, description="The schedule slot this run is for (scheduled runs only)."
    )
    webhook_url: str | None = Field(
        None, description="Where `run.finished` and its jobs' events are POSTed."
    )
    webhook_events: list[EventType] | None = Field(
        None, description="The events wanted; null: all that apply."
    )
    links: RunLinks


class RunList(BaseModel):
    items: list[RunOut]
    next: str | None = Field(None, description="Cursor of the next page, or null.")


class RunJobList(JobList):
    """A page of a run's jobs and the run itself, counted in the same statement (one snapshot
    of the database): its counters agree with the jobs listed, even while it runs."""

    run: RunOut


class ScheduleOut(BaseModel):
    """A gallery's schedule. ``next_run_at`` is null while it is disabled."""

    cron: str
    timezone: str
    params: dict[str, Any] | None = Field(
        description="Canonical parameters of scheduled runs; null: the gallery's defaults at "
        "the time of each run."
    )
    enabled: bool
    only_stale: bool
    next_run_at: datetime | None
    description: str = Field(
        description="Human reading, e.g. 'every day at 03:00 (UTC), next: 2026-01-02 03:00 UTC'."
    )
    last_run_id: str | None
    webhook_url: str | None = Field(None, description="Given to each run it starts.")
    webhook_events: list[EventType] | None = None
    created_at: datetime
    updated_at: datetime


class GalleryLinks(BaseModel):
    self: str
    images: str
    runs: str
    schedule: str
    jobs: str


class GalleryOut(BaseModel):
    """A named set of your images with default segmentation parameters."""

    id: str
    name: str
    params: dict[str, Any] = Field(description="The canonical default parameters.")
    image_count: int = Field(ge=0)
    schedule: ScheduleOut | None
    last_run: RunOut | None = Field(description="The newest run, or null.")
    created_at: datetime
    updated_at: datetime
    links: GalleryLinks


class GalleryList(BaseModel):
    items: list[GalleryOut]
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


class WebhookSecret(BaseModel):
    """The owner's webhook signing secret (``Kseg-Signature``)."""

    secret: str = Field(description="`whsec_…`: HMAC-SHA256 key of the signatures.")


class DeliveryOut(BaseModel):
    """One webhook event to one URL, and how its attempts went."""

    id: str
    event_id: str = Field(description="The `Kseg-Event-Id` (receivers de-duplicate by it).")
    type: EventType
    url: str
    status: DeliveryStatus = Field(
        description="`pending` (to be sent or retried), `succeeded` (a 2xx came back) or "
        "`failed` (given up after the last retry)."
    )
    attempts: int = Field(ge=0)
    last_status_code: int | None = Field(description="HTTP status of the last answer.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending).")
    created_at: datetime
    object_id: str = Field(description="The job or run the event tells of.")
    finished_at: datetime | None = None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next: str | None = Field(None, description="Cursor of the next page, or null.")


class PaletteColor(BaseModel):
    """One colour of a job's palette (``palette.json``)."""

    hex: str
    rgb: list[int]
    name: str
    fraction: float


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    JobSubmitJson,
    JobSubmitForm,
    ImageUploadForm,
    GalleryCreate,
    GalleryUpdate,
    GalleryImagesJson,
    ScheduleIn,
    RunCreate,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    JobOut,
    JobList,
    ImageOut,
    ImageList,
    GalleryOut,
    GalleryList,
    GalleryImageOut,
    GalleryImageList,
    ScheduleOut,
    RunOut,
    RunList,
    RunJobList,
    Health,
    Ready,
    SegmentParams,
    WebhookSecret,
    DeliveryOut,
    DeliveryList,
    PaletteColor,
)
