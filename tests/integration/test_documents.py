"""The knowledge base live: real PDF/DOCX/CSV files through the CLI and the API, found by
chat, deleted from every shard."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from serve_app.cli import main as cli_main
from tests.unit.test_parsers import docx_bytes, pdf_bytes

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


def ask(http: httpx.Client, question: str) -> dict:  # type: ignore[type-arg]
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": question}],
            "memserve": {"cache": False, "write_back": False}}
    return http.post("/v1/chat/completions", json=body).json()["memserve"]


def test_ingest_find_and_delete(server: str, http: httpx.Client, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / f"policy-{tag}.pdf").write_bytes(pdf_bytes([
        "Remote work is allowed on Mondays and Fridays.",
        f"The zorblax code {tag} unlocks the server room on the third floor.",
    ]))
    (folder / f"menu-{tag}.docx").write_bytes(docx_bytes([f"The canteen special {tag} is mushroom risotto."]))
    (folder / f"staff-{tag}.csv").write_text("name,role\nAmara,chef\nBoris,driver\n")
    assert cli_main(["ingest", str(folder), "--url", server]) == 0

    docs = {d["filename"]: d for d in http.get("/v1/documents").json()["data"] if tag in d["filename"]}
    assert set(docs) == {f"policy-{tag}.pdf", f"menu-{tag}.docx", f"staff-{tag}.csv"}
    info = ask(http, f"What does the zorblax code {tag} unlock?")
    top = info["sources"][0]
    assert top["filename"] == f"policy-{tag}.pdf" and top["page"] == 2 and tag in top["text"]
    assert any(s["filename"] == f"menu-{tag}.docx" for s in ask(http, f"What is the canteen special {tag}?")["sources"])

    doc_id = docs[f"policy-{tag}.pdf"]["id"]
    assert http.delete(f"/v1/documents/{doc_id}").json()["deleted"]
    # Gone at once: the delete was acknowledged after the commit, and every search applies
    # the change log first.
    assert all(s["document_id"] != doc_id for s in ask(http, f"zorblax code {tag}")["sources"])


def test_bad_uploads(http: httpx.Client) -> None:
    refused = http.post("/v1/documents", files={"file": ("tool.exe", b"MZ")})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_document"
    job = http.post("/v1/documents", files={"file": ("scan.pdf", pdf_bytes(["", ""]))}).json()
    deadline = time.monotonic() + 120
    status = {}
    while time.monotonic() < deadline:
        status = http.get(f"/v1/documents/jobs/{job['job_id']}").json()
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert status["status"] == "failed" and "no text layer" in status["error"]
