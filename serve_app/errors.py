"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx.

`to_error` is the one place an exception becomes a status and a message, so the HTTP
handlers and the WebSocket cannot disagree about it. Also the ASGI guard that turns away
oversize bodies before they are read into memory.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray.exceptions import RayActorError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.clients.endpoint import StageUnavailable
from serve_app.core.tiers import UnknownTier
from serve_app.generation import PromptTooLongError
from serve_app.ingest.parsers import DocumentError
from serve_app.protocol import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

# When a stage sheds load without saying how long to wait (its backpressure_config has no
# retry_after_s), or a component is down: ask clients to come back after this long.
DEFAULT_RETRY_AFTER_S = 1.0

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error the caller is told about: HTTP status plus OpenAI's `message/param/code`,
    and for 429/503 how long to wait before retrying (the `Retry-After` header)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after_s = retry_after_s

    def detail(self) -> dict[str, Any]:
        """The inner `error` object (what a WebSocket error event carries)."""
        detail: dict[str, Any] = error_body(self.status, self.message, self.param, self.code)["error"]
        return detail

    def response(self) -> JSONResponse:
        response = error_response(self.status, self.message, self.param, self.code)
        if self.retry_after_s is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return response


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    detail = ErrorDetail(message=message, type=_TYPES.get(status, "server_error"), param=param, code=code)
    return ErrorResponse(error=detail).model_dump()


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """`param: msg` of the first error (and the param), from a request's or a model's validation."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error")
        return "the request body is not valid JSON" + (f": {why}" if why else ""), None
    loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


def unwrap_remote(exc: BaseException) -> BaseException:
    """The original of an exception raised in another replica.

    Ray re-raises it wrapped (a RayTaskError that also subclasses the original type, so
    `isinstance` still matches); the original, with its own message, is at `exc.cause`.
    """
    while isinstance(cause := getattr(exc, "cause", None), BaseException) and cause is not exc:
        exc = cause
    return exc


def to_error(exc: BaseException) -> APIError:
    """THE mapping from an exception to what the caller is told; HTTP and WebSocket both use it.

    A `RequestValidationError` (a request that failed its model) is the caller's 400; a
    bare pydantic `ValidationError` escaping server code is a bug, so it is a 500 like
    anything else unexpected (and logged with its traceback).
    """
    exc = unwrap_remote(exc)
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestValidationError):
        message, param = validation_message(exc)
        return APIError(400, message, param, "invalid_value")
    if isinstance(exc, UnknownTier):
        return APIError(400, str(exc), "tier", "invalid_value")
    if isinstance(exc, DocumentError):
        return APIError(400, str(exc), "file", "invalid_document")
    if isinstance(exc, PromptTooLongError):
        return APIError(400, str(exc), "messages", "context_length_exceeded")
    if isinstance(exc, StageUnavailable) and exc.overloaded:
        return APIError(503, "memserve is at capacity; retry shortly", code="overloaded",
                        retry_after_s=exc.retry_after_s or DEFAULT_RETRY_AFTER_S)
    # RayActorError: the replica a call went to died or cannot be reached (a node lost, a
    # replica killed); Serve replaces it, so this is a retryable outage, not a bug.
    # A Redis reply that timed out (`redis_timeout_s`) is the same outage, seen from a hung server.
    if isinstance(exc, (StageUnavailable, RedisConnectionError, RedisTimeoutError, RayActorError)):
        logger.warning("a dependency is unavailable: %r", exc)
        # A stage's own words say which part gave up and after how long ("the LLM did not
        # start answering within 60 s"); Redis's and Ray's name hosts and actors instead.
        what = f"{exc}: " if isinstance(exc, StageUnavailable) else ""
        return APIError(503, f"{what}a memserve component is unavailable; retry shortly", code="unavailable",
                        retry_after_s=DEFAULT_RETRY_AFTER_S)
    if isinstance(exc, StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail))
    logger.error("unhandled error", exc_info=exc)
    return APIError(500, "internal error; the request was not completed", code="internal_error")


def as_request_error(exc: ValidationError) -> RequestValidationError:
    """A model parse failure at an entry point (a WebSocket message) is a request error."""
    return RequestValidationError(exc.errors())


_HANDLED: tuple[type[Exception], ...] = (
    APIError, RequestValidationError, UnknownTier, StageUnavailable, RedisConnectionError, RedisTimeoutError,
    DocumentError,
    PromptTooLongError, StarletteHTTPException, Exception,
)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    response = to_error(exc).response()
    if response.status_code == 405:
        response.headers["Allow"] = allowed_methods(request)
    return response


def allowed_methods(request: Request) -> str:
    """The `Allow` of a 405 (RFC 9110 requires it): the methods of the path's routes.
    Starlette's own header names only the first route's (GET, not POST, of /v1/memories).
    As in OpenAPI, a literal path is its own resource: /v1/memories/stats allows GET even
    though /v1/memories/{memory_id} would also take the path."""
    by_template: dict[str, set[str]] = {}
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            by_template.setdefault(route.path_format, set()).update(route.methods)
    if not by_template:
        return ""
    most_specific = min(by_template, key=lambda template: template.count("{"))
    return ", ".join(sorted(by_template[most_specific]))


def install_error_handlers(app: FastAPI) -> None:
    """Every error an HTTP route can raise, answered by `to_error` in OpenAI's format."""
    for kind in _HANDLED:
        app.add_exception_handler(kind, _handle)


class BodySizeLimit:
    """Reject bodies over `max_bytes` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}  # path -> its own limit (document uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise StarletteHTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counting_receive, send)


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


async def _reject(send: Send, limit: int) -> None:
    payload = json.dumps(error_body(413, _too_large(limit), code="body_too_large")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
