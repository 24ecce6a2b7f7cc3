"""memserve's own log lines carry the id of the request they belong to.

Ray Serve's proxy gives every HTTP request an id (the client's `X-Request-Id`, or a new
one) and returns it in the `x-request-id` response header; inside a replica the id is in
Serve's request context. This filter puts it on every record of memserve's loggers, so an
operator can go from a response header to the lines that request logged, on any replica.
"""

from __future__ import annotations

import logging

from ray.serve.context import _get_serve_request_context

FORMAT = "%(asctime)s %(levelname)s %(name)s [request %(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _get_serve_request_context().request_id or "-"
        return True


def install_request_id_logging(level: int = logging.INFO) -> None:
    """Route the `serve_app` loggers through one handler that names the request (idempotent)."""
    logger = logging.getLogger("serve_app")
    if any(isinstance(f, RequestIdFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
