"""OpenAPI operations declared beside their views.

``@operation(...)`` under a route decorator records the OpenAPI operation object of that view;
:mod:`kseg.web.api.openapi` walks the app's URL map and takes each route's path, methods and
path parameters from the route itself and the rest from here, so the document cannot list a
route the app lacks or miss one it has.

Why not flask-openapi3 or spectree: both validate requests from the view's signature and answer
their own error bodies, while kseg's views parse multipart and JSON themselves to give the
contract's ``{"error": {"code", "message"}}`` with a field-specific message. The schemas still
come from the pydantic models (:mod:`kseg.web.common.schemas`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple, TypeVar

from kseg.shared.core.palette import FORMATS as PALETTE_FORMATS
from kseg.shared.core.params import OUTPUT_NAMES
from kseg.web.common.paging import DEFAULT_LIMIT, MAX_LIMIT

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__openapi__"
REF = "#/components/schemas/{model}"
ALWAYS = (401, 429, 503)  # any authenticated call may answer these
PUBLIC: list[dict[str, list[str]]] = []  # ``security`` of an operation that needs no token

# Path parameters by the name the routes give them.
PATH_PARAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "job_id": ("Job id.", {"type": "string"}),
    "image_id": ("Image id.", {"type": "string"}),
    "gallery_id": ("Gallery id.", {"type": "string"}),
    "run_id": ("Run id.", {"type": "string"}),
    "name": ("Output name.", {"type": "string", "enum": list(OUTPUT_NAMES)}),
    "fmt": (
        "json: `[{hex, rgb, name, fraction}]`; css: custom properties `--kseg-0: #rrggbb;` in "
        "`:root {}`; gpl: a GIMP palette; ase: an Adobe Swatch Exchange file.",
        {"type": "string", "enum": list(PALETTE_FORMATS)},
    ),
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_request(model: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref(model)}}}


def upload_request(form: str, json_model: str | None = None) -> dict[str, Any]:
    """A multipart body with image parts ``file`` (and, where given, a JSON alternative)."""
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": ref(form),
            "encoding": {"file": {"contentType": "image/*, application/octet-stream"}},
        }
    }
    if json_model:
        content["application/json"] = {"schema": ref(json_model)}
    return {"required": True, "content": content}


def header(description: str, type_: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_}}


IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
}


def cached_file(media_type: str, description: str, etag: dict[str, Any]) -> dict[str, Any]:
    """The 200 (the file, with its ``ETag``) and 304 responses of a cacheable file."""
    return {
        "200": {
            "description": description,
            "headers": etag,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        },
        "304": {"description": "Not modified (If-None-Match matched).", "headers": etag},
    }


def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


# The OpenAPI parameters of every paged list.
PAGING = [
    query(
        "limit",
        f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
        type="integer",
        minimum=1,
        maximum=MAX_LIMIT,
        default=DEFAULT_LIMIT,
    ),
    query("cursor", "Opaque: the `next` of the previous page. Newest first."),
]


def path_param(name: str) -> dict[str, Any]:
    description, schema = PATH_PARAMS.get(name, (f"{name}.", {"type": "string"}))
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def error_refs(statuses: Iterable[int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(s): {"$ref": f"#/components/responses/E{s}"} for s in sorted({*ALWAYS, *statuses})
    }
    out["default"] = {"$ref": "#/components/responses/Error"}
    return out


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    responses: dict[str, Any],
    errors: Iterable[int] = (),
    description: str | None = None,
    request_body: dict[str, Any] | None = None,
    parameters: Iterable[dict[str, Any]] = (),
    public: bool = False,
) -> Callable[[F], F]:
    """Record the OpenAPI operation of the decorated view.

    ``errors`` are the statuses of the contract's error body this view may answer beyond 401,
    429 and 503 (which every authenticated call may answer) and 404 (which every route with
    path parameters may answer); a ``public`` view needs no token and lists only the
    ``responses`` given.
    """
    op: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    if public:
        op["security"] = PUBLIC
    if parameters:
        op["parameters"] = list(parameters)
    if request_body:
        op["requestBody"] = request_body
    op["responses"] = dict(responses) if public else {**responses, **error_refs(errors)}

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, op)
        return view

    return mark


def list_operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    model: str,
    parameters: Iterable[dict[str, Any]] = (),
    errors: Iterable[int] = (400, 422),
) -> Callable[[F], F]:
    """A paged list (``limit``, ``cursor``) answering a page of ``model`` (``JobList``: jobs);
    one under an object's path (``/galleries/{id}/runs``) answers 404 too, as every route with
    path parameters does (:mod:`kseg.web.api.openapi` adds it)."""
    noun = re.findall(r"[A-Z][a-z]*", model.removesuffix("List"))[-1].lower()
    what = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return operation(
        operation_id,
        summary,
        tag=tag,
        parameters=[*parameters, *PAGING],
        responses={"200": json_response(ref(model), f"A page of {what}.")},
        errors=errors,
    )


def read_operation(operation_id: str, summary: str, *, tag: str, model: str) -> Callable[[F], F]:
    """A read of one object by id (404 when it is not the owner's)."""
    what = model.removesuffix("Out").lower()
    return operation(
        operation_id,
        summary,
        tag=tag,
        responses={"200": json_response(ref(model), f"The {what}.")},
    )


def delete_operation(
    operation_id: str, summary: str, *, tag: str, description: str | None = None
) -> Callable[[F], F]:
    """A deletion answering 204 (404 when it is not the owner's)."""
    return operation(
        operation_id,
        summary,
        tag=tag,
        description=description,
        responses={"204": {"description": "Done."}},
    )


class Operations(NamedTuple):
    """The decorators above with one ``tag`` filled in (see :func:`tagged`)."""

    operation: Callable[..., Callable[[F], F]]
    list: Callable[..., Callable[[F], F]]
    read: Callable[..., Callable[[F], F]]
    delete: Callable[..., Callable[[F], F]]


def tagged(tag: str) -> Operations:
    """The operation decorators of one resource family, which the document groups under
    ``tag``: ``ops = tagged("jobs")``, then ``@ops.read(...)`` on a view."""
    makers = (operation, list_operation, read_operation, delete_operation)
    return Operations(*(partial(maker, tag=tag) for maker in makers))


def operation_of(view: Callable[..., Any]) -> dict[str, Any] | None:
    found: dict[str, Any] | None = getattr(view, ATTRIBUTE, None)
    return found
