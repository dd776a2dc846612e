"""The OpenAPI 3.1 document, generated from the pydantic models of :mod:`web.api.schemas` and
:class:`shared.params.SegmentParams` (``model_json_schema`` with a components ref template), so
it describes exactly what the code validates and answers."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from flask import Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kseg.shared.core.params import OUTPUT_NAMES
from kseg.shared.statuses import JOB_STATUSES
from kseg.web.api.blueprint import bp
from kseg.web.api.errors import ERROR_CODES
from kseg.web.api.paging import DEFAULT_LIMIT, MAX_LIMIT
from kseg.web.api.schemas import REQUEST_MODELS, RESPONSE_MODELS

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _components() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in REQUEST_MODELS]
    pairs += [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF)
    schemas = dict(top.get("$defs", {}))
    code = schemas["ErrorDetail"]["properties"]["code"]
    code["description"] = "Stable snake_case error code, one of: " + ", ".join(
        f"`{name}` ({status})" for name, (status, _) in ERROR_CODES.items()
    )
    return schemas


ERROR_TEXT = {
    400: "Malformed request (bad JSON, wrong content type, missing file part, bad cursor).",
    401: "Missing or bad token.",
    404: "No such object for this token (another owner's objects answer 404 too).",
    405: "Method not allowed.",
    413: "Upload over the size limit, or an image over the pixel limit.",
    429: "Over a rate limit (`rate_limited`: too many requests or failed sign-ins) or a quota "
    "(`quota_exceeded`: the owner's active jobs or stored bytes); wait Retry-After seconds.",
    415: "Not an image format kseg reads.",
    422: "Well-formed but invalid value (e.g. k=1, unknown field, corrupt or empty image).",
    503: "Database or broker unavailable; retry later.",
}


def errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(s): {"$ref": f"#/components/responses/E{s}"} for s in (401, 429, 503, *statuses)
    }
    out["default"] = {"$ref": "#/components/responses/Error"}
    return out


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


PAGING = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "Opaque: the `next` of the previous page. Newest first.",
        "schema": {"type": "string"},
    },
]
IMAGE_ETAG = {
    "ETag": {"description": "The original's SHA-256 (hex).", "schema": {"type": "string"}}
}
OUTPUT_ETAG = {
    "ETag": {
        "description": "The output's id: an output never changes once stored.",
        "schema": {"type": "string"},
    }
}
PUBLIC: list[dict[str, list[str]]] = []


def _paths() -> dict[str, Any]:
    job_id = path_param("job_id", "Job id.")
    image_id = path_param("image_id", "Image id.")
    return {
        "/api/v1/jobs": {
            "post": {
                "operationId": "createJob",
                "tags": ["jobs"],
                "summary": "Submit a segmentation job",
                "description": "Multipart: the image in part `file` and the parameters as form "
                "fields (`outputs` comma-separated or repeated). JSON: `image_id` of an "
                "uploaded image plus parameters. The job is stored before it is queued; when an "
                "identical job already succeeded (same image, parameters, algorithm version) "
                "and `reuse` is true, the new job is born `succeeded` with `reused_from` set.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": ref("JobSubmitForm"),
                            "encoding": {
                                "file": {"contentType": "image/*, application/octet-stream"}
                            },
                        },
                        "application/json": {"schema": ref("JobSubmitJson")},
                    },
                },
                "responses": {
                    "202": {
                        **json_body(ref("JobOut"), "Accepted: the job object."),
                        "headers": {
                            "Location": {
                                "description": "URL of the job.",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    **errors(400, 404, 413, 415, 422),
                },
            },
            "get": {
                "operationId": "listJobs",
                "tags": ["jobs"],
                "summary": "List your jobs, newest first",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs in these states (comma-separated): "
                        + ", ".join(JOB_STATUSES)
                        + ".",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "gallery_id",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs made by this gallery's runs (an unknown or "
                        "another owner's gallery is a 404).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "image_id",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs on this image (an unknown or another owner's "
                        "image is a 404).",
                        "schema": {"type": "string"},
                    },
                    *PAGING,
                ],
                "responses": {
                    "200": json_body(ref("JobList"), "A page of jobs."),
                    **errors(400, 404, 422),
                },
            },
        },
        "/api/v1/jobs/{job_id}": {
            "parameters": [job_id],
            "get": {
                "operationId": "getJob",
                "tags": ["jobs"],
                "summary": "A job: status, progress, parameters and (when succeeded) result",
                "responses": {
                    "200": json_body(ref("JobOut"), "The job."),
                    **errors(404),
                },
            },
            "delete": {
                "operationId": "deleteJob",
                "tags": ["jobs"],
                "summary": "Cancel a queued/running job, or delete a finished one, and its results",
                "description": "A queued or running job becomes `canceled` (its row stays); a "
                "finished job is removed. Results shared with another job are kept for it.",
                "responses": {"204": {"description": "Done."}, **errors(404)},
            },
        },
        "/api/v1/jobs/{job_id}/outputs/{name}.png": {
            "parameters": [
                job_id,
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "Output name.",
                    "schema": {"type": "string", "enum": list(OUTPUT_NAMES)},
                },
            ],
            "get": {
                "operationId": "getJobOutput",
                "tags": ["jobs"],
                "summary": "A result image (PNG); cacheable forever (it never changes)",
                "parameters": [
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The PNG.",
                        "headers": OUTPUT_ETAG,
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "304": {
                        "description": "Not modified (If-None-Match matched).",
                        "headers": OUTPUT_ETAG,
                    },
                    **errors(404),
                },
            },
        },
        "/api/v1/images": {
            "post": {
                "operationId": "uploadImages",
                "tags": ["images"],
                "summary": "Upload one or more images (parts `file`)",
                "description": "The same bytes uploaded twice by one owner give the same image "
                "id. All or nothing: one unusable file rejects the whole request.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": ref("ImageUploadForm"),
                            "encoding": {
                                "file": {"contentType": "image/*, application/octet-stream"}
                            },
                        }
                    },
                },
                "responses": {
                    "201": json_body(ref("ImageList"), "The images, one per part, in order."),
                    **errors(400, 413, 415, 422),
                },
            },
            "get": {
                "operationId": "listImages",
                "tags": ["images"],
                "summary": "List your images, newest first (extension)",
                "parameters": PAGING,
                "responses": {
                    "200": json_body(ref("ImageList"), "A page of images."),
                    **errors(400, 422),
                },
            },
        },
        "/api/v1/images/{image_id}": {
            "parameters": [image_id],
            "get": {
                "operationId": "getImage",
                "tags": ["images"],
                "summary": "Image metadata",
                "responses": {"200": json_body(ref("ImageOut"), "The image."), **errors(404)},
            },
            "delete": {
                "operationId": "deleteImage",
                "tags": ["images"],
                "summary": "Delete an image, every job on it and their results",
                "description": "Also removes the image from its galleries. A job on it that a "
                "worker is still running is dropped: the worker stores nothing. Uploading the "
                "same bytes again makes a new image.",
                "responses": {"204": {"description": "Deleted."}, **errors(404)},
            },
        },
        "/api/v1/images/{image_id}/file": {
            "parameters": [image_id],
            "get": {
                "operationId": "getImageFile",
                "tags": ["images"],
                "summary": "The original bytes as uploaded, with their content type",
                "responses": {
                    "200": {
                        "description": "The original file.",
                        "headers": IMAGE_ETAG,
                        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "Not modified.", "headers": IMAGE_ETAG},
                    **errors(404),
                },
            },
        },
        **_gallery_paths(),
        **_integration_paths(),
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["operations"],
                "summary": "This document",
                "security": PUBLIC,
                "responses": {"200": json_body({"type": "object"}, "The OpenAPI 3.1 document.")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: 200 while the process serves",
                "security": PUBLIC,
                "responses": {"200": json_body(ref("Health"), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: 200 when the database and the broker answer",
                "description": "With `?workers=1`, also 503 when no worker heart-beat recently.",
                "security": PUBLIC,
                "parameters": [
                    {
                        "name": "workers",
                        "in": "query",
                        "required": False,
                        "description": "1: also require a fresh worker heartbeat.",
                        "schema": {"type": "string", "enum": ["0", "1"]},
                    }
                ],
                "responses": {
                    "200": json_body(ref("Ready"), "Ready."),
                    "503": json_body(ref("Ready"), "Not ready; each check says why."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics: jobs by status, queue depth, job durations",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _gallery_paths() -> dict[str, Any]:
    gallery_id = path_param("gallery_id", "Gallery id.")
    run_id = path_param("run_id", "Run id.")
    image_id = path_param("image_id", "Image id.")
    tags = ["galleries"]

    def json_request(model: str, required: bool = True) -> dict[str, Any]:
        return {"required": required, "content": {"application/json": {"schema": ref(model)}}}

    location = {"Location": {"description": "URL of the new object.", "schema": {"type": "string"}}}
    done = {"204": {"description": "Done."}}
    return {
        "/api/v1/galleries": {
            "post": {
                "operationId": "createGallery",
                "tags": tags,
                "summary": "Create a gallery: a name and default segmentation parameters",
                "requestBody": json_request("GalleryCreate"),
                "responses": {
                    "201": {
                        **json_body(ref("GalleryOut"), "Created: the gallery."),
                        "headers": location,
                    },
                    **errors(400, 422),
                },
            },
            "get": {
                "operationId": "listGalleries",
                "tags": tags,
                "summary": "List your galleries, newest first",
                "parameters": PAGING,
                "responses": {
                    "200": json_body(ref("GalleryList"), "A page of galleries."),
                    **errors(400, 422),
                },
            },
        },
        "/api/v1/galleries/{gallery_id}": {
            "parameters": [gallery_id],
            "get": {
                "operationId": "getGallery",
                "tags": tags,
                "summary": "A gallery with its image count, schedule and newest run",
                "responses": {"200": json_body(ref("GalleryOut"), "The gallery."), **errors(404)},
            },
            "patch": {
                "operationId": "updateGallery",
                "tags": tags,
                "summary": "Rename a gallery and/or change its default parameters",
                "description": "`params` is merged over the current defaults (JSON merge "
                'patch); `"params": null` resets them to the contract\'s defaults.',
                "requestBody": json_request("GalleryUpdate"),
                "responses": {
                    "200": json_body(ref("GalleryOut"), "The gallery."),
                    **errors(400, 404, 422),
                },
            },
            "delete": {
                "operationId": "deleteGallery",
                "tags": tags,
                "summary": "Delete a gallery with its membership, schedule and runs",
                "description": "The images and the jobs stay (the jobs lose `gallery_id` and "
                "`run_id`).",
                "responses": {**done, **errors(404)},
            },
        },
        "/api/v1/galleries/{gallery_id}/images": {
            "parameters": [gallery_id],
            "post": {
                "operationId": "addGalleryImages",
                "tags": tags,
                "summary": "Add images: upload them (parts `file`) or name uploaded ones",
                "description": "Multipart: one or more parts `file`, uploaded all or nothing as "
                "with POST /api/v1/images. JSON: `image_ids` of your images (an unknown id is a "
                "404 and adds none). Images already in the gallery stay in it once.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": ref("ImageUploadForm"),
                            "encoding": {
                                "file": {"contentType": "image/*, application/octet-stream"}
                            },
                        },
                        "application/json": {"schema": ref("GalleryImagesJson")},
                    },
                },
                "responses": {
                    "201": json_body(ref("ImageList"), "The images, in the order given."),
                    **errors(400, 404, 413, 415, 422),
                },
            },
            "get": {
                "operationId": "listGalleryImages",
                "tags": tags,
                "summary": "The gallery's images, newest added first, each with its newest job",
                "parameters": PAGING,
                "responses": {
                    "200": json_body(ref("GalleryImageList"), "A page of images."),
                    **errors(400, 404, 422),
                },
            },
        },
        "/api/v1/galleries/{gallery_id}/images/{image_id}": {
            "parameters": [gallery_id, image_id],
            "delete": {
                "operationId": "removeGalleryImage",
                "tags": tags,
                "summary": "Take an image out of the gallery (the image itself stays)",
                "responses": {**done, **errors(404)},
            },
        },
        "/api/v1/galleries/{gallery_id}/schedule": {
            "parameters": [gallery_id],
            "put": {
                "operationId": "putSchedule",
                "tags": tags,
                "summary": "Create or replace the gallery's reprocessing schedule",
                "description": "The cron expression is matched on the wall clock of `timezone`. "
                "Around daylight-saving changes a skipped local time runs shifted forward by "
                "the gap, and a repeated one runs once, at its first occurrence. A bad cron "
                "expression or time zone is a 422.",
                "requestBody": json_request("ScheduleIn"),
                "responses": {
                    "200": json_body(ref("ScheduleOut"), "The schedule, with `next_run_at`."),
                    **errors(400, 404, 422),
                },
            },
            "get": {
                "operationId": "getSchedule",
                "tags": tags,
                "summary": "The gallery's schedule (404 when it has none)",
                "responses": {
                    "200": json_body(ref("ScheduleOut"), "The schedule."),
                    **errors(404),
                },
            },
            "delete": {
                "operationId": "deleteSchedule",
                "tags": tags,
                "summary": "Remove the gallery's schedule",
                "responses": {**done, **errors(404)},
            },
        },
        "/api/v1/galleries/{gallery_id}/runs": {
            "parameters": [gallery_id],
            "post": {
                "operationId": "createRun",
                "tags": tags,
                "summary": "Reprocess the gallery now: a job per image",
                "description": "`params` are merged over the gallery's defaults. With "
                "`only_stale` (the default), images that already have a succeeded result for "
                "the same parameters and the current algorithm version get no job and count as "
                "`skipped`. The jobs are stored before they are queued; an empty body is fine.",
                "requestBody": json_request("RunCreate", required=False),
                "responses": {
                    "202": {
                        **json_body(ref("RunOut"), "Accepted: the run."),
                        "headers": location,
                    },
                    **errors(400, 404, 422),
                },
            },
            "get": {
                "operationId": "listRuns",
                "tags": tags,
                "summary": "The gallery's runs, newest first",
                "parameters": PAGING,
                "responses": {
                    "200": json_body(ref("RunList"), "A page of runs."),
                    **errors(400, 404, 422),
                },
            },
        },
        "/api/v1/runs/{run_id}": {
            "parameters": [run_id],
            "get": {
                "operationId": "getRun",
                "tags": tags,
                "summary": "A run: status and how many of its jobs are in each state",
                "responses": {"200": json_body(ref("RunOut"), "The run."), **errors(404)},
            },
        },
        "/api/v1/runs/{run_id}/jobs": {
            "parameters": [run_id],
            "get": {
                "operationId": "listRunJobs",
                "tags": tags,
                "summary": "The run's jobs, newest first (extension)",
                "parameters": PAGING,
                "responses": {
                    "200": json_body(ref("JobList"), "A page of jobs."),
                    **errors(400, 404, 422),
                },
            },
        },
    }


# ---------------------------------------------------------------- issue 25: webhooks, exports,
# palettes. Kept together in this one block (the module is about to be refactored): the
# paths of web/api/webhooks.py and web/api/exports.py.

ZIP_BODY = {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
ZIP_HEADERS = {
    "Content-Disposition": {
        "description": "attachment; filename=…zip",
        "schema": {"type": "string"},
    }
}
EXPORT_TEXT = (
    "Streamed as it is written: `manifest.json` at the root (the jobs, their folders and "
    "files), then per job a folder `<image filename stem>-<job id prefix>/` with "
    "`result.json` (the job's `result` plus `job_id`, `status`, `params`, `image`, `error`) "
    "and each rendered `<output>.png`. A job that did not succeed has only its "
    "`result.json`."
)
PALETTE_FORMATS = {
    "json": ("application/json", {"type": "array", "items": ref("PaletteColor")}),
    "css": ("text/css", {"type": "string"}),
    "gpl": ("text/plain", {"type": "string"}),
    "ase": ("application/octet-stream", {"type": "string", "format": "binary"}),
}


def _integration_paths() -> dict[str, Any]:
    job_id = path_param("job_id", "Job id.")
    run_id = path_param("run_id", "Run id.")
    return {
        "/api/v1/webhooks/secret": {
            "get": {
                "operationId": "getWebhookSecret",
                "tags": ["webhooks"],
                "summary": "Your webhook signing secret (made on first use)",
                "description": "Every delivery carries `Kseg-Signature: t=<unix seconds>,"
                'v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`; verify it and reject old '
                "timestamps (see Webhooks in the README).",
                "responses": {
                    "200": json_body(ref("WebhookSecret"), "The secret."),
                    **errors(),
                },
            }
        },
        "/api/v1/webhooks/secret/rotate": {
            "post": {
                "operationId": "rotateWebhookSecret",
                "tags": ["webhooks"],
                "summary": "Replace your webhook signing secret",
                "description": "Attempts made from now on are signed with the new secret.",
                "responses": {
                    "200": json_body(ref("WebhookSecret"), "The new secret."),
                    **errors(),
                },
            }
        },
        "/api/v1/webhooks/deliveries": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "tags": ["webhooks"],
                "summary": "Your webhook deliveries, newest first, with their attempts",
                "description": "A delivery is retried with backoff (5 s, 30 s, 2 min, 10 min, "
                "1 h, 3 h, 6 h, 12 h) on a timeout or a non-2xx answer, then `failed`.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only deliveries in this state.",
                        "schema": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
                    },
                    *PAGING,
                ],
                "responses": {
                    "200": json_body(ref("DeliveryList"), "A page of deliveries."),
                    **errors(400, 422),
                },
            }
        },
        "/api/v1/jobs/{job_id}/export.zip": {
            "parameters": [job_id],
            "get": {
                "operationId": "exportJob",
                "tags": ["jobs"],
                "summary": "The job's outputs and result.json as one ZIP",
                "description": EXPORT_TEXT,
                "responses": {
                    "200": {"description": "The ZIP.", "headers": ZIP_HEADERS, "content": ZIP_BODY},
                    **errors(404),
                },
            },
        },
        "/api/v1/runs/{run_id}/export.zip": {
            "parameters": [run_id],
            "get": {
                "operationId": "exportRun",
                "tags": ["galleries"],
                "summary": "Every job of the run: outputs and result.json, as one ZIP",
                "description": EXPORT_TEXT + " Images the run skipped (`only_stale`) are not "
                "in it.",
                "responses": {
                    "200": {"description": "The ZIP.", "headers": ZIP_HEADERS, "content": ZIP_BODY},
                    **errors(404),
                },
            },
        },
        "/api/v1/jobs/{job_id}/palette.{fmt}": {
            "parameters": [
                job_id,
                {
                    "name": "fmt",
                    "in": "path",
                    "required": True,
                    "description": "json: `[{hex, rgb, name, fraction}]`; css: custom "
                    "properties `--kseg-0: #rrggbb;` in `:root {}`; gpl: a GIMP palette; ase: "
                    "an Adobe Swatch Exchange file.",
                    "schema": {"type": "string", "enum": list(PALETTE_FORMATS)},
                },
            ],
            "get": {
                "operationId": "getJobPalette",
                "tags": ["jobs"],
                "summary": "The job's cluster colours as a palette file (label order)",
                "responses": {
                    "200": {
                        "description": "The palette.",
                        "content": {
                            kind: {"schema": schema} for kind, schema in PALETTE_FORMATS.values()
                        },
                    },
                    **errors(404),
                },
            },
        },
    }


# ---------------------------------------------------------------- end of the issue 25 block


def _error_responses() -> dict[str, Any]:
    out = {f"E{s}": json_body(ref("Error"), text) for s, text in ERROR_TEXT.items()}
    out["E401"]["headers"] = {
        "WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}
    }
    out["E429"]["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    }
    out["Error"] = json_body(ref("Error"), "Any other error, same body.")
    return out


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kseg",
            "version": "1",
            "description": "Image segmentation by K-Means colour clustering. Every error answers "
            '`{"error": {"code", "message"}}`. Lists take `limit` and `cursor` and answer '
            '`{"items", "next"}`. Times are ISO 8601 UTC with a `Z` suffix.',
        },
        "tags": [
            {"name": "jobs"},
            {"name": "images"},
            {"name": "galleries"},
            {"name": "webhooks"},
            {"name": "operations"},
        ],
        "security": [{"bearer": []}],
        "x-error-codes": {
            name: {"status": status, "description": meaning}
            for name, (status, meaning) in ERROR_CODES.items()
        },
        "paths": _paths(),
        "components": {
            "schemas": _components(),
            "responses": _error_responses(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`kseg token create NAME`, or KSEG_API_TOKEN).",
                }
            },
        },
    }


def document() -> dict[str, Any]:
    return copy.deepcopy(_document())


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(_document())
