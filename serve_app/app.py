"""The one app factory: middleware, error handlers and the resource routers.

`create_app(runtime)` is called by the Orchestrator deployment once per replica (Ray
Serve's `__serve_build_asgi_app__`); tests call it with a Runtime over local clients.
Everything a route needs reaches it through `app.state.runtime` (see `RuntimeDep`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from serve_app.auth import TenantAuth
from serve_app.errors import BodySizeLimit, install_error_handlers
from serve_app.openapi import install as install_openapi
from serve_app.routes import ROUTERS
from serve_app.runtime import Runtime

logger = logging.getLogger(__name__)

MULTIPART_ENVELOPE_BYTES = 64 * 1024


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="memserve", version="0.1.0")
    app.state.runtime = rt
    # Uploads get their own limit (plus room for the multipart envelope).
    app.add_middleware(BodySizeLimit, max_bytes=rt.settings.server.max_body_bytes,
                       overrides={"/v1/documents": rt.settings.documents.max_bytes + MULTIPART_ENVELOPE_BYTES})
    install_error_handlers(app)
    # Outermost: nothing is read before the key and its rate limit (serve_app/auth.py).
    app.add_middleware(TenantAuth, directory=rt.tenants)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app, rt.settings)  # every status and constraint in /openapi.json (serve_app/openapi.py)
    return app
