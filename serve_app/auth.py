"""Optional API keys, checked the way OpenAI clients send them: `Authorization: Bearer <key>`.

With no key configured (`server.api_keys` empty and `MEMSERVE_API_KEYS` unset) the app is
open, as on a developer's machine. With keys, every route but `/health` (the probe of
load balancers and KubeRay) needs one of them: HTTP gets a 401 in OpenAI's error format,
a WebSocket handshake is refused before it is accepted (clients see HTTP 403).
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.errors import error_body

OPEN_PATHS = frozenset({"/health"})
POLICY_VIOLATION = 1008


def bearer_token(scope: Scope) -> str | None:
    value = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(token: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every key, so timing says nothing about them."""
    if token is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "invalid API key"})
            return
        message = "missing API key" if token is None else "incorrect API key"
        payload = json.dumps(error_body(401, f"{message}: send 'Authorization: Bearer <key>'",
                                        code="invalid_api_key")).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]})
        await send({"type": "http.response.body", "body": payload})
