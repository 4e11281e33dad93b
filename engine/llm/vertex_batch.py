"""Vertex AI batch prediction for large datagen jobs: request JSONL out, job through google-cloud-aiplatform, results in.

Lines are matched back to their calls by a hash of the request body (the result file echoes each request).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.runner.context import StageCancelled, StageFailed
from engine.llm.base import LLMError, LLMResult
from engine.llm.vertex import build_request, parse_response


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_batch_file(calls: Iterable[Any], path: Path) -> dict[str, str]:
    """One {"request": body} line per call; returns {request hash: call key}."""
    index: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as fh:
        for call in calls:
            body = build_request(call.request)
            index[request_hash(body)] = call.key
            fh.write(json.dumps({"request": body}, ensure_ascii=False) + "\n")
    return index


def parse_batch_results(lines: Iterable[str], index: dict[str, str]) -> tuple[dict[str, LLMResult], dict[str, str]]:
    """({call key: result}, {call key or line: error}) from prediction output lines."""
    results: dict[str, LLMResult] = {}
    errors: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            errors[f"line {n}"] = f"invalid JSON ({err.msg})"
            continue
        key = index.get(request_hash(row.get("request", {})))
        if key is None:
            errors[f"line {n}"] = "result matches no request of this job"
            continue
        if row.get("status"):
            errors[key] = str(row["status"])[:300]
            continue
        try:
            results[key] = parse_response(row.get("response") or {})
        except LLMError as err:
            errors[key] = str(err)
    return results, errors


def run_batch(ctx, calls: list, record: Callable[[Any, LLMResult], bool], poll_s: float = 30.0) -> None:
    """Upload, submit, poll, download, import. Needs llm.bucket (gs://...) and Application Default Credentials."""
    from google.cloud import aiplatform, storage

    llm = ctx.cfg.datagen.llm
    if not llm.bucket.startswith("gs://"):
        raise StageFailed("datagen.llm.bucket must be a gs:// prefix for vertex-batch")
    local = ctx.folder / f"batch-{int(time.time())}.jsonl"
    index = write_batch_file(calls, local)
    bucket_name, _, prefix = llm.bucket[5:].partition("/")
    client = storage.Client(project=llm.project or None)
    blob_name = f"{prefix.rstrip('/')}/{ctx.run_id}/{local.name}".lstrip("/")
    client.bucket(bucket_name).blob(blob_name).upload_from_filename(str(local))
    aiplatform.init(project=llm.project or None, location=llm.location if llm.location != "global" else "us-central1")
    job = aiplatform.BatchPredictionJob.submit(
        job_display_name=f"aba-{ctx.run_id}-datagen", model_name=f"publishers/google/models/{llm.model}",
        instances_format="jsonl", predictions_format="jsonl", gcs_source=f"gs://{bucket_name}/{blob_name}",
        gcs_destination_prefix=f"gs://{bucket_name}/{prefix.rstrip('/')}/{ctx.run_id}/out",
    )
    ctx.log(f"submitted Vertex batch job {job.resource_name} with {len(index)} requests")
    ctx.artifact("batch-job", job.resource_name, requests=len(index))
    while not job.done():
        if ctx.should_stop():
            job.cancel()
            raise StageCancelled()
        ctx.progress(0, len(index), f"batch job {job.state.name}")
        time.sleep(poll_s)
    if job.state.name != "JOB_STATE_SUCCEEDED":
        raise StageFailed(f"Vertex batch job ended {job.state.name}: {job.error}")
    out_prefix = job.output_info.gcs_output_directory[5:]
    out_bucket, _, out_path = out_prefix.partition("/")
    lines: list[str] = []
    for blob in client.list_blobs(out_bucket, prefix=out_path):
        if blob.name.endswith(".jsonl"):
            lines += blob.download_as_text().splitlines()
    import_results(ctx, calls, lines, index, record)


def import_results(ctx, calls: list, lines: list[str], index: dict[str, str], record: Callable[[Any, LLMResult], bool]) -> int:
    results, errors = parse_batch_results(lines, index)
    by_key = {c.key: c for c in calls}
    stored = 0
    for key, result in results.items():
        stored += int(record(by_key[key], result))
    for key, err in errors.items():
        if key in by_key:
            ctx.store.mark_call_failed(key, err)
        else:
            ctx.log(f"batch result {key}: {err}", "warn")
    ctx.log(f"imported {stored} traces from the batch job; {len(errors)} errors")
    return stored
