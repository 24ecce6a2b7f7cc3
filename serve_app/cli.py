"""Command-line ingester: send files or folders to a running memserve.

    python -m serve_app.cli ingest PATH... [--user U] [--url http://127.0.0.1:8000] [--api-key K]

Each file is uploaded to `POST /v1/documents` (scope `shared`, or `user:U` with --user),
then its job is followed with a progress bar until it is done or failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tqdm import tqdm

from serve_app.ingest.parsers import KINDS

logger = logging.getLogger("memserve.cli")


def files_of(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KINDS)
        else:
            yield path


def ingest_file(client: httpx.Client, path: Path, scope: str, poll_s: float = 0.2) -> dict[str, object]:
    with path.open("rb") as f:
        response = client.post("/v1/documents", files={"file": (path.name, f)}, data={"scope": scope})
    if response.status_code != 202:
        return {"status": "refused", "error": response.json().get("error", {}).get("message", response.text)}
    job_id = response.json()["job_id"]
    with tqdm(desc=path.name, unit="chunk", leave=True) as bar:
        while True:
            job: dict[str, object] = client.get(f"/v1/documents/jobs/{job_id}").json()
            bar.total = job["chunks_total"] or None
            bar.n = job["chunks_done"]
            bar.refresh()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="upload files or folders to the knowledge base")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--user", help="ingest into this user's private knowledge (default: shared)")
    ingest.add_argument("--url", default="http://127.0.0.1:8000")
    ingest.add_argument("--api-key", default=os.environ.get("MEMSERVE_API_KEY"),
                        help="sent as a Bearer token (default: $MEMSERVE_API_KEY)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scope = f"user:{args.user}" if args.user else "shared"
    failures = 0
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, timeout=300, headers=headers) as client:
        for path in files_of(args.paths):
            result = ingest_file(client, path, scope)
            if result["status"] != "done":
                failures += 1
                logger.error("%s: %s (%s)", path, result["status"], result.get("error"))
            else:
                logger.info("%s: %s chunks", path, result["chunks_total"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
