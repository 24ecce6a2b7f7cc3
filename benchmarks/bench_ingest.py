"""Ingestion throughput through the API next to the Embedder's raw batched throughput.

    make run                                  # in one terminal
    .venv/bin/python benchmarks/bench_ingest.py [--url http://127.0.0.1:8000] [--chunks 2000]

Generates a text corpus of about `--chunks` chunks (500 characters each, in 10 files),
measures the raw embedding rate with `POST /v1/embeddings` in batches of 64 on texts of the
same shape (different words, so no cache helps either side), then uploads the corpus with
`POST /v1/documents` and waits until every job is done. Prints chunks/s for both and
the ratio; the whole pipeline (parse, chunk, embed, commit to every shard) should keep at
least 70 % of the raw rate.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid

import httpx

WORDS = [
    "river", "harbor", "lantern", "copper", "meadow", "signal", "orbit", "garden", "falcon", "marble", "canyon",
    "ember", "willow", "summit", "quartz", "velvet", "beacon", "timber", "glacier", "pepper", "saddle", "violet",
    "cobalt", "thunder",
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(rng.randint(8, 14))).capitalize() + "."


def corpus_text(rng: random.Random, chars: int) -> str:
    parts, size = [], 0
    while size < chars:
        s = sentence(rng)
        parts.append(s)
        size += len(s) + 1
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--files", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(7)
    with httpx.Client(base_url=args.url, timeout=600) as client:
        # Raw: the Embedder alone, batched, on texts shaped like the chunks.
        raw_texts = [corpus_text(rng, 480)[:500] for _ in range(args.chunks)]
        started = time.perf_counter()
        for i in range(0, len(raw_texts), 64):
            batch = {"model": "all-MiniLM-L6-v2", "input": raw_texts[i:i + 64]}
            client.post("/v1/embeddings", json=batch).raise_for_status()
        raw_rate = len(raw_texts) / (time.perf_counter() - started)

        # Pipeline: upload the corpus and wait for every job.
        per_file = args.chunks * 450 // args.files  # 500-char chunks overlap by 50
        files = [(f"bench-{uuid.uuid4().hex[:6]}-{i}.txt", corpus_text(rng, per_file).encode())
                 for i in range(args.files)]
        started = time.perf_counter()
        jobs = [client.post("/v1/documents", files={"file": f}).json()["job_id"] for f in files]
        total = 0
        for job_id in jobs:
            while (job := client.get(f"/v1/documents/jobs/{job_id}").json())["status"] not in ("done", "failed"):
                time.sleep(0.05)
            assert job["status"] == "done", job
            total += job["chunks_total"]
        pipeline_rate = total / (time.perf_counter() - started)
        for doc in client.get("/v1/documents").json()["data"]:
            if doc["filename"].startswith("bench-"):
                client.delete(f"/v1/documents/{doc['id']}")
    print(f"\n{total} chunks in {args.files} files")
    print(f"raw Embedder (POST /v1/embeddings, batches of 64): {raw_rate:7.1f} chunks/s")
    print(f"ingestion pipeline (POST /v1/documents -> done):   {pipeline_rate:7.1f} chunks/s")
    print(f"pipeline / raw: {pipeline_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
