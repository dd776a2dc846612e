"""The OpenAPI 3.1 document, built from the app itself: the paths, methods and path parameters
from its URL map, each operation from the ``@operation`` beside its view
(:mod:`kseg.web.common.apidoc`), and the schemas from the pydantic models of
:mod:`kseg.web.common.schemas` and :class:`kseg.shared.core.params.SegmentParams`
(``model_json_schema`` with a components ref template), so it describes exactly the routes
the app serves and what the code validates and answers."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kseg.web.api.blueprint import bp
from kseg.web.common.apidoc import (
    REF,
    error_refs,
    json_response,
    operation,
    operation_of,
    path_param,
    ref,
)
from kseg.web.common.errors import ERROR_CODES
from kseg.web.common.schemas import REQUEST_MODELS, RESPONSE_MODELS

DOCUMENTED_BLUEPRINTS = ("api", "ops")  # the HTML pages are not part of the API
METHODS = ("get", "post", "put", "patch", "delete")
_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


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


def _paths(app: Flask) -> dict[str, Any]:
    """Every route of the documented blueprints, each method with its view's operation.

    A view without ``@operation`` still appears, marked ``x-undocumented`` (a test fails on
    it), so the document never silently drops a route."""
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint.partition(".")[0] not in DOCUMENTED_BLUEPRINTS:
            continue
        view = app.view_functions[rule.endpoint]
        item = paths.setdefault(_RULE_ARG.sub(r"{\1}", rule.rule), {})
        if rule.arguments:
            names = [m.group(1) for m in _RULE_ARG.finditer(rule.rule)]
            item["parameters"] = [path_param(name) for name in names]
        op = operation_of(view) or {
            "operationId": rule.endpoint.replace(".", "_"),
            "x-undocumented": True,
            "responses": {"default": {"$ref": "#/components/responses/Error"}},
        }
        if rule.arguments and "default" in op["responses"]:
            # A path naming an object answers 404 when the object is not the caller's.
            op = {**op, "responses": dict(sorted({**op["responses"], **error_refs([404])}.items()))}
        for method in METHODS:
            if method.upper() in (rule.methods or ()):
                item[method] = op
    return paths


def _error_responses() -> dict[str, Any]:
    out = {f"E{s}": json_response(ref("Error"), text) for s, text in ERROR_TEXT.items()}
    out["E401"]["headers"] = {
        "WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}
    }
    out["E429"]["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    }
    out["Error"] = json_response(ref("Error"), "Any other error, same body.")
    return out


def build_document(app: Flask) -> dict[str, Any]:
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
        "paths": _paths(app),
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


@bp.get("/openapi.json")
@operation(
    "getOpenApi",
    "This document",
    tag="operations",
    public=True,
    responses={"200": json_response({"type": "object"}, "The OpenAPI 3.1 document.")},
)
def openapi() -> Response:
    # Built once per app: the routes do not change after start.
    document = current_app.extensions.get("kseg_openapi")
    if document is None:
        document = current_app.extensions["kseg_openapi"] = build_document(current_app)
    return jsonify(document)
