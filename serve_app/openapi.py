"""The OpenAPI document, made to say what the app does, in one place.

FastAPI documents each route's success response and a 422 for a failed validation, and
nothing else. memserve answers a failed validation 400 (`serve_app.errors`), and every
route can answer more: `document` post-processes the generated document (`install`,
called by `create_app`):

- every operation lists each error status it can answer, with OpenAI's error object as
  the body: 400 where it takes input, 415 where that is a JSON body (`StrictRoute`), 404
  where a path names a resource or a field a model or tenant, 401/429/503 (the caller's
  key and rate, the graph's health) on every route but `/health`, 403 where the route
  checks the caller's rights, 405 (with `Allow`), 413 and 500 everywhere, and whatever a
  route declares itself (`responses={409: ...}`);
- FastAPI's 422 and its validation-error schemas are gone;
- int64's range is `format: int64` (tools read a `maximum` of 2**63 - 1 as the double 2**63);
- limits that are configuration (`protocol.rules.from_setting`: the tier names, the
  longest memory text, the model's context) get this replica's values;
- models a route refers to by hand (`component`: an SSE chunk, a body the route reads
  itself) are added to the components.

The request constraints themselves live on the models (`serve_app.protocol`), so the
schema and the validation cannot drift apart; `tests/unit/test_openapi_contract.py` runs
schemathesis over every operation to keep it that way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serve_app.auth import OPEN_PATHS
from serve_app.protocol import ErrorResponse
from serve_app.protocol.rules import SETTING
from serve_app.runtime import principal
from serve_app.settings import AppSettings

Mode = Literal["validation", "serialization"]

# Models routes refer to by `$ref` without FastAPI seeing them (see `component`).
_COMPONENTS: dict[str, tuple[type[BaseModel], Mode]] = {"ErrorResponse": (ErrorResponse, "serialization")}

_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def component(model: type[BaseModel], mode: Mode = "serialization") -> dict[str, str]:
    """A `$ref` to `model` in the document's components (added there by `document`)."""
    _COMPONENTS.setdefault(model.__name__, (model, mode))
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def event_stream(chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that answers `stream: true` with Server-Sent Events: each
    event's `data` is a JSON `chunk`, an in-band error (after the stream opened), or the
    final `[DONE]`."""
    data = {"anyOf": [
        {"const": "[DONE]"},
        {"contentMediaType": "application/json",
         "contentSchema": {"anyOf": [component(chunk), component(ErrorResponse)]}},
    ]}
    event = {"type": "object", "required": ["data"], "properties": {"data": data, "event": {"const": "message"}}}
    return {200: {"description": "the answer; with `stream: true`, Server-Sent Events ending in `data: [DONE]`",
                  "content": {"text/event-stream": {"schema": event}}}}


def _errors(settings: AppSettings) -> dict[int, str]:
    return {
        400: "Invalid request: a field's type, value or constraint, an unknown or unsupported field "
             "(named in `param`), a body that is not valid JSON or UTF-8, a prompt longer than the context.",
        401: "Missing or incorrect API key (only when API keys are configured).",
        403: "The API key's tenant may not do this (admin only).",
        404: "No such resource (another user's id is answered exactly like an unknown one) or model.",
        405: "The path does not take this method; `Allow` lists those it takes.",
        413: f"The body is larger than {settings.server.max_body_bytes} bytes (`server.max_body_bytes`; "
             f"document uploads: {settings.documents.max_bytes} bytes, `documents.max_bytes`).",
        415: "The body is not JSON (its Content-Type is not application/json).",
        429: "The API key's rate limit is exceeded; retry after `Retry-After` seconds.",
        500: "An internal error (a bug); the request was not completed.",
        503: "memserve is at capacity or one of its components is unavailable; retry after `Retry-After` seconds.",
    }


_RETRY_AFTER = {"description": "seconds to wait", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "the methods the path takes", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


# Fields that name something which may not exist: a model (`Runtime.check_model`), a tenant.
_NAMING = frozenset({"model", "tenant"})


def _statuses(path: str, operation: dict[str, Any], route: APIRoute | None, naming_bodies: set[str]) -> set[int]:
    statuses = {405, 413, 500}
    if path not in OPEN_PATHS:
        statuses |= {401, 429, 503}
        if route is not None and principal in set(_calls(route.dependant)):  # it checks the caller's rights
            statuses.add(403)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(400)
    if set(operation.get("requestBody", {}).get("content", {})) == {"application/json"}:
        statuses.add(415)  # `StrictRoute`
    # A path naming a resource, or a parameter or body naming a model or tenant, can name none.
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if (any(p.get("in") == "path" or p.get("name") in _NAMING for p in parameters)
            or {body.get("$ref"), *(branch.get("$ref") for branch in body.get("anyOf", []))} & naming_bodies):
        statuses.add(404)
    return statuses


def document(openapi: dict[str, Any], app: FastAPI, settings: AppSettings) -> dict[str, Any]:
    """`openapi` (FastAPI's document of `app`) with every error status, configured limit
    and component added."""
    openapi = copy.deepcopy(openapi)  # FastAPI may share parts with other apps' documents
    schemas: dict[str, Any] = openapi.setdefault("components", {}).setdefault("schemas", {})
    _add_components(schemas)
    _fill_settings(openapi, settings)
    _int64(openapi)
    naming_bodies = {f"#/components/schemas/{name}" for name, schema in schemas.items()
                     if _NAMING & set(schema.get("properties", {}))}
    routes = {(method.lower(), route.path_format): route for route in app.routes if isinstance(route, APIRoute)
              for method in route.methods}
    errors = _errors(settings)
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code, declared in responses.items():  # an error a route declares itself (409, ...)
                if code[0] in "45" and "content" not in declared:
                    declared["content"] = {"application/json": {"schema": component(ErrorResponse)}}
            for status in sorted(_statuses(path, operation, routes.get((method, path)), naming_bodies)):
                response: dict[str, Any] = {"description": errors[status],
                                            "content": {"application/json": {"schema": component(ErrorResponse)}}}
                if status in _HEADERS:
                    response["headers"] = _HEADERS[status]
                responses.setdefault(str(status), response)
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return openapi


def _fill_settings(node: Any, settings: AppSettings) -> None:
    """Each `from_setting` marker becomes its keywords with the configured values."""
    if isinstance(node, list):
        for item in node:
            _fill_settings(item, settings)
    elif isinstance(node, dict):
        for keyword, path in node.pop(SETTING, {}).items():
            value: Any = settings
            for name in path.split("."):
                value = getattr(value, name)
            if keyword == "enum":  # the names of a mapping (tiers), or the one name configured
                value = list(value) if isinstance(value, dict) else [value]
            node[keyword] = value
        for child in node.values():
            _fill_settings(child, settings)


INT64 = (-(2**63), 2**63 - 1)


def _int64(node: Any) -> None:
    """An integer bounded by int64's range says so as `format: int64`, not as its limits:
    tools read numeric keywords as doubles, and 2**63 - 1 as a double is 2**63."""
    if isinstance(node, list):
        for item in node:
            _int64(item)
    elif isinstance(node, dict):
        if node.get("type") == "integer":
            for keyword, limit in zip(("minimum", "maximum"), INT64, strict=True):
                if node.get(keyword) in (limit, float(limit)):  # FastAPI writes them as floats
                    del node[keyword]
                    node["format"] = "int64"
        for child in node.values():
            _int64(child)


def _add_components(schemas: dict[str, Any]) -> None:
    models = [(model, mode) for model, mode in _COMPONENTS.values()]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    for name, schema in definitions.get("$defs", {}).items():
        schemas.setdefault(name, schema)


def install(app: FastAPI, settings: AppSettings) -> None:
    """Serve `document(...)` as the app's `/openapi.json` (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                    description=app.description)
            app.openapi_schema = document(generated, app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document
