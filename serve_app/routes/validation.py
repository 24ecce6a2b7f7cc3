"""The 400s that name a request's field, with OpenAI's codes, for the OpenAI endpoints.

`serve_app.errors` answers any failed validation with code `invalid_value` and the first
error's location as `param`. The strict request models (`serve_app.protocol.strict`)
fail in two more ways a client should be able to tell apart: a field memserve does not
know (`unknown_parameter`, pydantic's `extra_forbidden`) and a field it knows but does
not do (`unsupported_parameter`); and some checks run in a model validator, where the
field they are about is in the error's `ctx["param"]`, not its location. `request_error`
turns those into an `APIError`; anything else goes on to `errors.to_error` unchanged.

HTTP routes get this through `StrictRoute` (FastAPI's documented custom-route hook);
the WebSocket calls `parse_request` on each message. Both read JSON with `loads`: UTF-8,
no NaN or Infinity (JSON has neither), and a number with a zero fraction (`3.0`, `1e3`) is
an integer, as JSON Schema reads it (the models are strict: `"3"` is not one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from serve_app.errors import APIError, as_request_error
from serve_app.protocol.strict import INVALID, UNSUPPORTED

UNKNOWN = "unknown_parameter"
_WRAPPERS = ("body", "query", "path")

Model = TypeVar("Model", bound=BaseModel)


def request_error(errors: Sequence[Mapping[str, Any]]) -> APIError | None:
    """The first error about a named field (unknown, unsupported, or checked by a model
    validator) as a 400 naming it, or None to leave the errors to `errors.to_error`."""
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in _WRAPPERS]
        kind = error.get("type")
        if kind == "extra_forbidden":
            param = ".".join(loc)
            return APIError(400, f"Unrecognized request argument supplied: {param}", param, UNKNOWN)
        param_in_ctx = (error.get("ctx") or {}).get("param")
        if kind in (UNSUPPORTED, INVALID) and param_in_ctx:
            param = ".".join([*loc, str(param_in_ctx)])
            return APIError(400, f"{param}: {error.get('msg')}", param, str(kind))
    return None


def _number(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return int(value) if value.is_integer() else value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: str | bytes) -> Any:
    """A request body's JSON (see the module docstring); every way it can fail is a
    `json.JSONDecodeError` saying why, which FastAPI answers as invalid JSON (a 400)."""
    text = raw
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        return json.loads(text, parse_float=_number, parse_constant=_not_json)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not valid UTF-8", "", exc.start) from None
    except ValueError as exc:  # NaN, Infinity, 1e999, an integer of more than 4300 digits
        raise json.JSONDecodeError(str(exc), str(text), 0) from None
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None


class JSONRequest(Request):
    """A request whose `json()` is `loads` (FastAPI's documented custom-Request hook)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


def parse_request(model: type[Model], raw: str | bytes) -> Model:
    """A JSON body parsed into `model`; a body that fails it is the caller's 400."""
    try:
        return model.model_validate(loads(raw))
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": exc.msg}}]) from None
    except ValidationError as exc:
        raise request_error(exc.errors()) or as_request_error(exc) from None


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class StrictRoute(APIRoute):
    """An APIRoute whose request-validation failures name the field with OpenAI's codes,
    and whose JSON body must say it is JSON (a 415 otherwise, not a puzzling 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.body_field is not None

        async def strict_handler(request: Request) -> Response:
            headers = request.headers
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            if takes_json and has_body and not is_json(content_type := headers.get("content-type", "")):
                raise APIError(415, "the body must be JSON (Content-Type: application/json), not "
                                    f"{content_type[:100] or 'without a Content-Type'}", code="unsupported_media_type")
            try:
                return await handler(JSONRequest(request.scope, request.receive))
            except RequestValidationError as exc:
                raise request_error(exc.errors()) or exc from None

        return strict_handler
