"""Vertex AI batch prediction for large datagen jobs: request JSONL out, job through google-cloud-aiplatform, results in.

Every request line carries its call's key in `labels` (a generateContent request field: billing metadata the model
ignores); the result file echoes each request, labels included, so two traces of the same prompt and tier, whose
bodies are identical, come back to their own calls. A job submitted before a kill is found again on resume and
imported, never submitted twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.llm.base import LLMError, LLMResult
from engine.llm.vertex import build_request, parse_response
from engine.context import StageCancelled, StageFailed

LABEL = "aba_call"  # label keys: lowercase letters, digits, _ and -, starting with a letter; values at most 63 chars


def label_value(call_key: str) -> str:
    """The call key as a label value (call keys are sha256 hex; 63 of its 64 digits keep it unique)."""
    return call_key.lower()[:63]


def write_batch_file(calls: Iterable[Any], path: Path) -> dict[str, str]:
    """One {"request": body} line per call, its key in body.labels; returns {label value: call key}."""
    index: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as fh:
        for call in calls:
            body = build_request(call.request)
            label = label_value(call.key)
            if label in index:
                raise ValueError(f"two batch requests share the key {label}")  # call keys are unique by construction
            body["labels"] = {LABEL: label}
            index[label] = call.key
            fh.write(json.dumps({"request": body}, ensure_ascii=False) + "\n")
    return index


def parse_batch_results(lines: Iterable[str], index: dict[str, str]) -> tuple[dict[str, LLMResult], dict[str, str]]:
    """({call key: result}, {call key or line: error}) from prediction output lines, matched by the label."""
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
        request = row.get("request") if isinstance(row, dict) else None
        labels = request.get("labels") if isinstance(request, dict) else None
        key = index.get(str((labels or {}).get(LABEL, "")))
        if key is None:
            errors[f"line {n}"] = "result matches no request of this job"
            continue
        if key in results:
            errors[f"line {n}"] = "a second result for one request (ignored)"
            continue
        if row.get("status"):
            errors[key] = str(row["status"])[:300]
            continue
        try:
            results[key] = parse_response(row.get("response") or {})
            errors.pop(key, None)
        except LLMError as err:
            errors[key] = str(err)
    return results, errors


def _services():
    """The Google Cloud clients (a function, so tests can hand in stand-ins)."""
    from google.cloud import aiplatform, storage

    return aiplatform, storage


def run_batch(ctx, calls: list, record: Callable[[Any, LLMResult], bool], poll_s: float = 30.0) -> None:
    """Find and import any job an earlier attempt left behind, then upload, submit, poll and import what is left.
    Needs llm.bucket (gs://...) and Application Default Credentials."""
    aiplatform, storage = _services()
    llm = ctx.cfg.datagen.llm
    if not llm.bucket.startswith("gs://"):
        raise StageFailed("datagen.llm.bucket must be a gs:// prefix for vertex-batch")
    client = storage.Client(project=llm.project or None)
    aiplatform.init(project=llm.project or None, location=llm.location if llm.location != "global" else "us-central1")
    imported = {a["path"] for a in ctx.store.artifacts(ctx.name, "batch-imported")}
    for art in ctx.store.artifacts(ctx.name, "batch-job"):
        if art["path"] in imported:
            continue
        ctx.log(f"found batch job {art['path']} from an earlier attempt; waiting for it instead of resubmitting")
        job = aiplatform.BatchPredictionJob(art["path"])
        _finish_job(ctx, client, job, calls, record, poll_s)
    done = ctx.store.done_calls(c.key for c in calls)
    calls = [c for c in calls if c.key not in done]
    if not calls:
        return
    local = ctx.folder / f"batch-{int(time.time())}.jsonl"
    index = write_batch_file(calls, local)
    bucket_name, _, prefix = llm.bucket[5:].partition("/")
    blob_name = f"{prefix.rstrip('/')}/{ctx.run_id}/{local.name}".lstrip("/")
    client.bucket(bucket_name).blob(blob_name).upload_from_filename(str(local))
    job = aiplatform.BatchPredictionJob.submit(
        job_display_name=f"aba-{ctx.run_id}-datagen", model_name=f"publishers/google/models/{llm.model}",
        instances_format="jsonl", predictions_format="jsonl", gcs_source=f"gs://{bucket_name}/{blob_name}",
        gcs_destination_prefix=f"gs://{bucket_name}/{prefix.rstrip('/')}/{ctx.run_id}/out",
    )
    ctx.log(f"submitted Vertex batch job {job.resource_name} with {len(index)} requests")
    ctx.artifact("batch-job", job.resource_name, requests=len(index))
    _finish_job(ctx, client, job, calls, record, poll_s)


def _finish_job(ctx, client, job, calls: list, record, poll_s: float) -> None:
    index = {label_value(c.key): c.key for c in calls}  # the labels this job's lines carry, for the calls not yet done
    while not job.done():
        if ctx.should_stop():
            job.cancel()  # rows it finished are still exported; resume imports them and submits only the rest
            raise StageCancelled()
        ctx.progress(0, len(index), f"batch job {job.state.name}")
        time.sleep(poll_s)
    lines: list[str] = []
    if job.state.name != "JOB_STATE_SUCCEEDED":
        ctx.log(f"Vertex batch job {job.resource_name} ended {job.state.name}: {job.error}", "error")
    out = getattr(getattr(job, "output_info", None), "gcs_output_directory", "") or ""
    if out.startswith("gs://"):  # a failed or cancelled job still exports the rows it completed
        out_bucket, _, out_path = out[5:].partition("/")
        for blob in client.list_blobs(out_bucket, prefix=out_path):
            if blob.name.endswith(".jsonl"):
                lines += blob.download_as_text().splitlines()
    import_results(ctx, calls, lines, index, record)
    ctx.artifact("batch-imported", job.resource_name, lines=len(lines))
    if job.state.name != "JOB_STATE_SUCCEEDED" and not lines:
        raise StageFailed(f"Vertex batch job ended {job.state.name}: {job.error}")


def import_results(ctx, calls: list, lines: list[str], index: dict[str, str], record: Callable[[Any, LLMResult], bool]) -> int:
    results, errors = parse_batch_results(lines, index)
    by_key = {c.key: c for c in calls}
    stored = 0
    for key, result in results.items():
        if key in by_key:
            stored += int(record(by_key[key], result))
    for key, err in errors.items():
        if key in by_key:
            ctx.store.mark_call_failed(key, err)
        else:
            ctx.log(f"batch result {key}: {err}", "warn")
    ctx.log(f"imported {stored} traces from the batch job; {len(errors)} errors")
    return stored
