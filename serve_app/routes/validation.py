"""The 400s that name a request's field, with OpenAI's codes, for the OpenAI endpoints.

`serve_app.errors` answers any failed validation with code `invalid_value` and the first
error's location as `param`. The strict request models (`serve_app.protocol.strict`)
fail in two more ways a client should be able to tell apart: a field memserve does not
know (`unknown_parameter`, pydantic's `extra_forbidden`) and a field it knows but does
not do (`unsupported_parameter`); and some checks run in a model validator, where the
field they are about is in the error's `ctx["param"]`, not its location. `request_error`
turns those into an `APIError`; anything else goes on to `errors.to_error` unchanged.

HTTP routes get this through `StrictRoute` (FastAPI's documented custom-route hook);
the WebSocket calls `parse_request` on each message.
"""

from __future__ import annotations

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


def parse_request(model: type[Model], raw: str | bytes) -> Model:
    """A JSON body parsed into `model`; a body that fails it is the caller's 400."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise request_error(exc.errors()) or as_request_error(exc) from None


class StrictRoute(APIRoute):
    """An APIRoute whose request-validation failures name the field with OpenAI's codes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise request_error(exc.errors()) or exc from None

        return strict_handler
