"""The states of a job and of a gallery run: one definition, used by the data layer, the API,
the pages and the clients. ``StrEnum``: a member is its string (``JobStatus.QUEUED ==
"queued"``), so rows, JSON and SQL see plain strings."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


#: Every job status, in the order a job goes through them.
JOB_STATUSES: tuple[str, ...] = tuple(JobStatus)
#: A job in one of these may still change.
ACTIVE_STATUSES: tuple[str, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)
#: A job in one of these changes no more.
FINAL_STATUSES: tuple[str, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
RUN_STATUSES: tuple[str, ...] = tuple(RunStatus)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "RUN_STATUSES",
    "JobStatus",
    "RunStatus",
]
