"""The app keeps the contract its own `/openapi.json` states: schemathesis over every operation.

schemathesis reads the schema the app serves and, for each operation (chat and completions,
streamed or not, included), sends the schema's examples, its boundary and mutation cases
(the coverage phase: every constraint just met and just broken, undeclared methods) and
random valid and invalid requests (fuzzing), in-process over ASGI, to an app built exactly
as an Orchestrator replica builds it, over the fakes (`tests/fakes.py`). Every response must
pass every check: no 5xx, only documented statuses, content types, headers and bodies,
invalid requests refused (4xx) and valid ones accepted, undeclared methods answered 405
with `Allow`. Seeded and derandomized, so a run is repeatable.

Left out, on purpose:
- `positive_data_acceptance` for CSV catalogs (`POST /v1/catalog` as text/csv): what makes a
  CSV a catalog (a header naming `name` and `price`, a row per product) is not something a
  JSON Schema of a string can state; the JSON form of the same operation is fully checked.
- `positive_data_acceptance` for a `logit_bias` naming a token id past the model's
  vocabulary: only the engine knows its vocabulary (such a request must then be a 400
  naming `logit_bias`, which is asserted instead).
- `negative_data_rejection` for an upload whose parts were given another JSON type (a
  boolean file, an array scope): multipart sends every part as text, so `false` arrives as
  a file holding "false" and an empty array as no part at all; the app cannot tell them
  from valid parts. Uploads with invalid text (a bad `scope`) are still checked.
- the stateful checks (`use_after_free`, `ensure_resource_availability`) need schemathesis'
  stateful phase and links between operations, which the schema does not declare.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.ingest.parsers import MEDIA_TYPES
from serve_app.settings import AppSettings
from tests.fakes import DIM, FAKE_VOCAB, FakeGraph
from tests.unit.conftest import app_over

CHECKS = [
    checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
    checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection,
    checks.positive_data_acceptance, checks.unsupported_method, checks.allow_header_conformance,
    checks.missing_required_header,
]

CONFIG = {
    "seed": 20_251_111,
    "generation": {"mode": "all", "max-examples": 20, "deterministic": True, "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
}


def _settings(settings: AppSettings) -> AppSettings:
    """The unit tests' settings with the server's own body limit (the conftest's 10 kB is
    for the 413 tests: a valid batch of 1000 memories is larger), and the fakes' models as
    they are: the fake LLM's context is 1000 tokens, the fake embedder's vectors have DIM."""
    settings.server.max_body_bytes = AppSettings().server.max_body_bytes
    settings.llm.max_model_len = 1000
    settings.embedder.dimension = DIM
    return settings


class Target:
    """The ASGI app schemathesis calls: a fresh replica's app for each operation."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


TARGET = Target()
_SCHEMA_DIR = tempfile.TemporaryDirectory(prefix="memserve-openapi-")
TARGET.app = app_over(_settings(AppSettings(data_dir=_SCHEMA_DIR.name)),
                      FakeGraph(Path(_SCHEMA_DIR.name) / "store.sqlite3")).app
schema = schemathesis.openapi.from_asgi("/openapi.json", TARGET, config=SchemathesisConfig.from_dict(CONFIG))

# Uploads may be PDF or DOCX parts: sent as the bytes they are, like application/octet-stream.
schemathesis.serializer.alias([media for media in MEDIA_TYPES if media.startswith("application/")],
                              "application/octet-stream")

CASES: Counter[str] = Counter()
STREAMED: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def replica(settings: AppSettings, graph: FakeGraph) -> None:
    TARGET.app = app_over(_settings(settings), graph).app


def _beyond_vocabulary(body: Any) -> bool:
    """A `logit_bias` naming a token id the model does not have: the engine answers 400
    `logit_bias` (the fake LLM, as vLLM, at FAKE_VOCAB); a schema cannot know a model's vocabulary."""
    bias = body.get("logit_bias") if isinstance(body, dict) else None
    return isinstance(bias, dict) and any(key.isascii() and key.isdigit() and int(key) >= FAKE_VOCAB for key in bias)


@schema.parametrize()
def test_every_operation_keeps_the_schema(case: Any) -> None:
    CASES[case.operation.label] += 1
    excluded = []
    if case.media_type == "text/csv" or _beyond_vocabulary(case.body):
        excluded.append(checks.positive_data_acceptance)
    if case.media_type == "multipart/form-data" and not (
            isinstance(case.body, dict) and all(isinstance(part, str | bytes) for part in case.body.values())):
        excluded.append(checks.negative_data_rejection)
    response = case.call_and_validate(checks=CHECKS, excluded_checks=excluded)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and _beyond_vocabulary(case.body) and response.status_code != 200:
        assert response.json()["error"]["param"] == "logit_bias", response.json()
    if response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", [""])[0]:
        STREAMED[case.operation.label] += 1  # a whole SSE stream, each event checked against the schema


def test_the_run_covered_every_operation_and_streaming() -> None:
    """Runs after the cases above (same module, later): each operation of the schema got
    cases, and streamed chat and completion answers (validated event by event) among them."""
    if not CASES:
        pytest.skip("run with the contract cases above")
    operations = {operation.ok().label for operation in schema.get_all_operations()}
    assert operations == set(CASES), operations ^ set(CASES)
    assert all(count >= 5 for count in CASES.values()), CASES
    assert STREAMED["POST /v1/chat/completions"] > 0 and STREAMED["POST /v1/completions"] > 0, STREAMED
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations; streamed answers: "
          f"{dict(STREAMED)}; per operation: {dict(CASES)}")


def test_the_schema_documents_errors_not_fastapi_422() -> None:
    document = schema.raw_schema
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert "422" not in statuses, (method, path)
            assert {"405", "413", "500"} <= statuses, (method, path)
            assert path == "/health" or {"401", "429", "503"} <= statuses, (method, path)
            allow = operation["responses"]["405"]["headers"]["Allow"]
            assert allow["required"] is True
    assert "HTTPValidationError" not in document["components"]["schemas"]
