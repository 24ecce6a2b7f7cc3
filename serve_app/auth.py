"""API keys and per-key rate limits, checked the way OpenAI clients send keys:
`Authorization: Bearer <key>`, before a request does any work.

With no key configured (no `server.tenants` keys, `server.api_keys` empty, and neither
`MEMSERVE_TENANT_KEYS` nor `MEMSERVE_API_KEYS` set) the app is open, as on a developer's
machine: every request is the `default` tenant's, with admin rights, and not rate limited.
With keys, every route but `/health` (the probe of load balancers and KubeRay) needs one:
HTTP gets a 401 in OpenAI's error format, a WebSocket handshake is refused before it is
accepted (clients see HTTP 403). The key's tenant is put in the ASGI scope as a
`tenants.Principal` (`runtime.RuntimeDep` reads it), and its rate limit is applied: past
the burst, HTTP gets 429 `rate_limit_exceeded` with `Retry-After`; a WebSocket handshake
is closed with 1013 (try again later), and each chat message on an open socket takes a
token too, a refused one answered with an error event (the connection stays open). The
limit is per Orchestrator replica (`serve_app.ratelimit`).
"""

from __future__ import annotations

import json
import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import error_body
from serve_app.ratelimit import RateLimiter
from serve_app.settings import RateLimitSettings
from serve_app.tenants import OPEN_PRINCIPAL, PRINCIPAL_KEY, TenantDirectory

OPEN_PATHS = frozenset({"/health"})
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def bearer_token(scope: Scope) -> str | None:
    value = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


def rate_limited(wait_s: float) -> dict[str, object]:
    return error_body(429, f"rate limit exceeded for this API key; retry after {retry_after(wait_s)} s",
                      code="rate_limit_exceeded")


class TenantAuth:
    """The outermost middleware: authenticate, rate limit, name the caller's tenant."""

    def __init__(self, app: ASGIApp, directory: TenantDirectory, limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.directory = directory
        self.limiter = limiter or RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.directory.enabled:
            await self.app({**scope, PRINCIPAL_KEY: OPEN_PRINCIPAL}, receive, send)
            return
        token = bearer_token(scope)
        found = None if token is None else await self.directory.resolve(token)
        if found is None:
            await _refuse(scope, send, "missing API key" if token is None else "incorrect API key")
            return
        wait = self.limiter.check(found.digest, found.rate_limit)
        if wait:
            await _throttle(scope, send, wait)
            return
        if scope["type"] == "websocket" and found.rate_limit is not None:
            receive = self._metered(receive, send, found.digest, found.rate_limit)
        await self.app({**scope, PRINCIPAL_KEY: found.principal}, receive, send)

    def _metered(self, receive: Receive, send: Send, digest: str, limit: RateLimitSettings) -> Receive:
        """Each WebSocket message is a request: over the limit, it is answered with an
        error event here and never reaches the app (which is waiting for the next one)."""

        async def metered() -> Message:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                wait = self.limiter.check(digest, limit)
                if not wait:
                    return message
                event = {"type": "error", "error": rate_limited(wait)["error"]}
                await send({"type": "websocket.send", "text": json.dumps(event)})

        return metered


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "invalid API key"})
        return
    payload = json.dumps(error_body(401, f"{message}: send 'Authorization: Bearer <key>'",
                                    code="invalid_api_key")).encode()
    await _respond(send, 401, payload, [(b"www-authenticate", b"Bearer")])


async def _throttle(scope: Scope, send: Send, wait_s: float) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER,
                    "reason": f"rate limit exceeded; retry after {retry_after(wait_s)} s"})
        return
    payload = json.dumps(rate_limited(wait_s)).encode()
    await _respond(send, 429, payload, [(b"retry-after", str(retry_after(wait_s)).encode())])


async def _respond(send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers,
    ]})
    await send({"type": "http.response.body", "body": payload})
