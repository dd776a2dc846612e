"""The OpenAPI document: valid, generated from the models, complete, and true to the live app
(schemathesis generates requests from it and checks every answer against it)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from openapi_spec_validator import validate

from kseg.shared.core.params import SegmentParams
from tests.service.test_api_common import Api, tiny_png


def test_openapi_is_valid_public_and_complete(api: Api) -> None:
    r = api.client.get("/api/v1/openapi.json")  # no token needed
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = r.get_json()
    validate(doc)
    paths = doc["paths"]
    # Every route of the API and of the operations endpoints, with each of its methods, is
    # documented, and nothing else is (the HTML pages are not part of the API): the app's
    # URL map is the list, not a third one written here.
    routes: dict[str, set[str]] = {}
    for rule in api.app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] in {"api", "ops"}:
            path = rule.rule.replace("<", "{").replace(">", "}")
            routes.setdefault(path, set()).update(
                method.lower() for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
            )
    documented = {
        path: {method for method in item if method in {"get", "post", "put", "patch", "delete"}}
        for path, item in paths.items()
    }
    assert documented == routes
    # Every operation comes from an @operation beside its view (web/common/apidoc.py).
    undocumented = [
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
        and (op.get("x-undocumented") or not op.get("summary"))
    ]
    assert not undocumented, f"routes without @operation: {undocumented}"
    ids = [
        op["operationId"]
        for item in paths.values()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(ids) == len(set(ids)), "operationId must be unique"
    assert {"/api/v1/jobs", "/api/v1/galleries/{gallery_id}/runs", "/healthz"} <= set(routes)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    post = paths["/api/v1/jobs"]["post"]
    assert set(post["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert set(post["responses"]) >= {"202", "400", "401", "413", "415", "422", "503"}
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    # A path naming an object answers 404 for another owner's object; lists say so too.
    no_404 = [
        f"{method.upper()} {path}"
        for path, item in paths.items()
        if "{" in path
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"} and "404" not in op["responses"]
    ]
    assert not no_404, f"operations on an object's path without a 404: {no_404}"
    assert "404" not in paths["/api/v1/galleries"]["get"]["responses"]


def test_openapi_schemas_come_from_the_models(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    params = SegmentParams.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["SegmentParams"]["properties"] == params["properties"]
    form = schemas["JobSubmitForm"]["properties"]
    assert form["file"]["format"] == "binary"
    assert (
        set(params["properties"]) <= set(form)
        and "image_id" in schemas["JobSubmitJson"]["properties"]
    )
    assert form["k"] == params["properties"]["k"]


def test_live_app_conforms_to_its_schema(api: Api) -> None:
    """Bounded generated requests (valid and invalid) to every operation: no 5xx, and every
    answer's status, content type, headers and body are the documented ones."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # Some real objects, so generated ids are not the only thing the API ever sees: every
    # other positive case (except deletions) is sent with these ids in its path.
    job = api.submit(tiny_png(1), k=2, outputs="labels").get_json()
    assert api.run_job(job["id"]) == "succeeded"
    gallery = api.post("/api/v1/galleries", json={"name": "g", "params": {"k": 2}}).get_json()
    gallery_images = f"/api/v1/galleries/{gallery['id']}/images"
    assert api.post(gallery_images, json={"image_ids": [job["image"]["id"]]}).status_code == 201
    run = api.post(f"/api/v1/galleries/{gallery['id']}/runs").get_json()
    for run_job in api.get(f"/api/v1/runs/{run['id']}/jobs").get_json()["items"]:
        assert api.run_job(run_job["id"]) == "succeeded"
    schedule = {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    assert api.put(f"/api/v1/galleries/{gallery['id']}/schedule", json=schedule).status_code == 200
    real_ids = {
        "job_id": job["id"],
        "image_id": job["image"]["id"],
        "gallery_id": gallery["id"],
        "run_id": run["id"],
    }

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api.app)
    checks: list[Any] = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    headers = api.headers()
    deadline = time.monotonic() + 30  # per backend: CI has 15 minutes for everything
    calls = 0

    def run_cases(operation: Any, mode: Any, op_checks: list[Any]) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            if (
                mode == GenerationMode.POSITIVE
                and case.method.upper() != "DELETE"
                and case.path_parameters
                and calls % 2
            ):
                for name in case.path_parameters:
                    case.path_parameters[name] = real_ids.get(name, case.path_parameters[name])
            case.call_and_validate(headers=headers, checks=op_checks)

        try:
            run()
        except Unsatisfiable:
            # nothing to make invalid (no parameters, no body): positive cases covered it
            assert mode == GenerationMode.NEGATIVE, operation.label

    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    assert len(operations) >= 27, labels  # from_wsgi leaves out the schema URL itself
    for operation in operations:
        # /readyz answers a documented 503 when no worker heart-beats (?workers=1)
        op_checks = checks[1:] if operation.path == "/readyz" else checks
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() > deadline:
                pytest.fail(f"schemathesis run over its time bound after {calls} calls")
            run_cases(operation, mode, op_checks)
    assert calls > 100


def _codes_raised_in_source() -> set[str]:
    """Every error code the application's source answers with, found in its syntax tree:
    ``ApiError(status, "code", …)``, ``error_response(status, "code", …)``, ``not_found("x")``
    and ``own(Model, id, "x")`` (``x_not_found``), the ``code`` of the error classes and the
    server's refusals."""
    import ast

    from kseg.web.serve import REFUSALS
    from tests.conftest import ROOT

    codes = {code for code, *_ in REFUSALS.values()}
    for path in [*(ROOT / "web").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        if path.name == "client.py":  # the client reads codes, it answers none
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                args = node.args
                if name in ("ApiError", "error_response") and len(args) >= 2:
                    if isinstance(args[1], ast.Constant):
                        codes.add(args[1].value)
                elif name == "not_found" and args and isinstance(args[0], ast.Constant):
                    codes.add(f"{args[0].value}_not_found")
                elif name == "own" and len(args) >= 3 and isinstance(args[2], ast.Constant):
                    codes.add(f"{args[2].value}_not_found")
            elif isinstance(node, ast.ClassDef):  # class E(KsegError, code="…")
                codes.update(
                    kw.value.value
                    for kw in node.keywords
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant)
                )
            elif (
                isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "code" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and path.parent.name in ("api", "common", "shared")
            ):
                codes.add(node.value.value)
    return codes


def test_every_error_code_is_listed_in_the_document_and_the_readme(api: Api) -> None:
    import re

    from kseg.web.common.errors import _HTTP_MESSAGES, ERROR_CODES
    from tests.conftest import ROOT

    raised = _codes_raised_in_source() | {code for code, _ in _HTTP_MESSAGES.values()}
    raised.discard("error")  # KsegError's base default, never answered
    assert raised <= set(ERROR_CODES), sorted(raised - set(ERROR_CODES))
    assert {"rate_limited", "quota_exceeded"} <= set(ERROR_CODES)
    doc = api.get("/api/v1/openapi.json").get_json()
    assert set(doc["x-error-codes"]) == set(ERROR_CODES)
    for name, (status, _) in ERROR_CODES.items():
        assert doc["x-error-codes"][name]["status"] == status
    assert "Retry-After" in doc["components"]["responses"]["E429"]["headers"]
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", readme, re.M))
    assert table == {name: str(status) for name, (status, _) in ERROR_CODES.items()}
