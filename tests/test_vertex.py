"""Vertex AI: errors classified from google-genai's own exceptions raised by a fake transport; batch jobs keep every trace."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from engine.llm.base import LLMError, LLMRequest
from engine.llm.limits import LimitedBackend, RetryPolicy

DATA = Path(__file__).parent / "data"
RECORDED = json.loads((DATA / "vertex_generate_response.json").read_text())
REQ = LLMRequest([{"role": "user", "content": "How should I plan a budget?"}], system="s", temperature=0.0, max_tokens=64)


def _backend(replies: list, seen: list | None = None):
    """A VertexBackend whose google-genai client talks to an httpx MockTransport: each reply is a status code
    (answered with a Vertex-style error body), an httpx exception class (raised), or 200 (the recorded answer)."""
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    from engine.llm.vertex import VertexBackend

    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(str(request.url))
        reply = queue.pop(0)
        if isinstance(reply, type) and issubclass(reply, Exception):
            raise reply("simulated", request=request)
        if reply == 200:
            return httpx.Response(200, json=RECORDED)
        status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                  503: "UNAVAILABLE"}.get(reply, "UNKNOWN")
        headers = {"Retry-After": "7"} if reply == 429 else {}
        body = {"error": {"code": reply, "message": f"simulated {status}\nsecond line", "status": status}}
        return httpx.Response(reply, json=body, headers=headers)

    client = genai.Client(
        vertexai=True, project="proj-x", location="europe-west4", credentials=Credentials(token="test-token"),
        http_options=types.HttpOptions(httpx_client=httpx.Client(transport=httpx.MockTransport(handler))),
    )
    return VertexBackend("gemini-x", "proj-x", "europe-west4", client=client)


@pytest.mark.parametrize("reply, status, retry_after", [
    (429, 429, 7.0), (503, 503, None), (httpx.ReadTimeout, 408, None), (httpx.ConnectError, None, None),
    (httpx.RemoteProtocolError, None, None),
])
def test_transient_vertex_errors_are_retriable(reply, status, retry_after):
    with pytest.raises(LLMError) as err:
        _backend([reply]).generate(REQ)
    e = err.value
    assert e.retriable and not e.fatal and e.status == status and e.retry_after == retry_after
    assert "\n" not in str(e)


@pytest.mark.parametrize("code", [400, 401, 403, 404])
def test_config_errors_fail_at_once_naming_project_location_model(code):
    seen: list[str] = []
    limited = LimitedBackend(_backend([code, 200], seen), 2, 10_000, 10**9, RetryPolicy(5, 0.01), sleep=lambda s: None)
    with pytest.raises(LLMError) as err:
        limited.call(REQ)
    e = err.value
    assert len(seen) == 1  # not retried
    assert e.fatal and not e.retriable and e.status == code
    line = str(e)
    assert "\n" not in line and "proj-x" in line and "europe-west4" in line and "gemini-x" in line


def test_vertex_retries_then_answers_with_retry_after():
    retries: list[tuple[int, int | None, float]] = []
    limited = LimitedBackend(_backend([429, httpx.ConnectTimeout, 503, 200]), 2, 10_000, 10**9,
                             RetryPolicy(5, 0.01), sleep=lambda s: None)
    result = limited.call(REQ, on_retry=lambda n, err, delay: retries.append((n, err.status, delay)))
    assert result.text.startswith("Group the factors") and result.tokens_in == 96
    assert [(n, status) for n, status, _ in retries] == [(1, 429), (2, 408), (3, 503)]
    assert retries[0][2] == 7.0 and all(d < 0.1 for _, _, d in retries[1:])  # Retry-After wins; backoff otherwise


def _calls(n: int = 2):
    """n calls of the same prompt and tier (idx differs): identical request bodies, distinct call keys."""
    from engine.stages.datagen import TraceCall, call_key
    from engine.prompts import Prompt

    prompt = Prompt("k1", "safety", [{"role": "user", "content": "Is it safe to mix these cleaners?"}], "test")
    out = []
    for idx in range(n):
        req = LLMRequest(prompt.turns, system="sys", temperature=1.0, max_tokens=64, meta={"tier": "chosen", "idx": idx})
        out.append(TraceCall(call_key("vertex-batch", "gemini-x", prompt, "chosen", idx, req), 1, prompt, "chosen", idx, req))
    return out


def test_batch_keeps_two_traces_of_the_same_prompt_and_tier(tmp_path):
    from engine.llm.vertex_batch import parse_batch_results, write_batch_file

    calls = _calls(2)
    index = write_batch_file(calls, tmp_path / "batch.jsonl")
    lines = [json.loads(ln) for ln in (tmp_path / "batch.jsonl").read_text().splitlines()]
    bodies = [{k: v for k, v in ln["request"].items() if k != "labels"} for ln in lines]
    assert bodies[0] == bodies[1] and lines[0]["request"]["labels"] != lines[1]["request"]["labels"]
    for ln in lines:  # label rules: at most 63 characters, lowercase letters, digits, _ and -
        (k, v), = ln["request"]["labels"].items()
        assert len(k) <= 63 and len(v) <= 63 and v == v.lower() and k[0].isalpha()
    second = dict(RECORDED, candidates=[{"content": {"parts": [{"text": "the second trace"}]}, "finishReason": "STOP"}])
    out = [json.dumps({"status": "", "request": lines[1]["request"], "response": second}),  # out of order
           json.dumps({"status": "", "request": lines[0]["request"], "response": RECORDED})]
    results, errors = parse_batch_results(out, index)
    assert not errors and set(results) == {c.key for c in calls}
    assert results[calls[1].key].text == "the second trace" and results[calls[0].key].text.startswith("Group")


class _Killed(Exception):
    """The worker dying while it polls the job."""


class _FakeCloud:
    """google.cloud.storage and aiplatform stand-ins: a bucket in memory, and batch jobs that answer every request
    line (echoing it, labels included, as Vertex does) with the recorded reply carrying the label as its text."""

    def __init__(self):
        self.blobs: dict[tuple[str, str], str] = {}
        self.submitted: list[str] = []
        self.jobs: dict[str, Any] = {}
        self.kill_next_poll = False
        cloud = self

        class Blob:
            def __init__(self, bucket: str, name: str):
                self.bucket, self.name = bucket, name

            def upload_from_filename(self, path: str) -> None:
                cloud.blobs[(self.bucket, self.name)] = Path(path).read_text()

            def download_as_text(self) -> str:
                return cloud.blobs[(self.bucket, self.name)]

        class Client:
            def __init__(self, project=None):
                pass

            def bucket(self, name: str):
                return SimpleNamespace(blob=lambda blob_name: Blob(name, blob_name))

            def list_blobs(self, bucket: str, prefix: str):
                return [Blob(b, n) for (b, n) in list(cloud.blobs) if b == bucket and n.startswith(prefix)]

        class Job:
            def __init__(self, resource_name: str):
                self.__dict__ = cloud.jobs[resource_name].__dict__  # re-attached: the same job

            @classmethod
            def submit(cls, gcs_source: str, gcs_destination_prefix: str, **kw):
                job = object.__new__(cls)
                job.resource_name = f"projects/p/locations/l/batchPredictionJobs/{len(cloud.submitted) + 1}"
                job.state = SimpleNamespace(name="JOB_STATE_RUNNING")
                job.error = None
                bucket, _, name = gcs_source[5:].partition("/")
                out = []
                for line in cloud.blobs[(bucket, name)].splitlines():
                    request = json.loads(line)["request"]
                    reply = {"candidates": [{"content": {"parts": [{"text": request["labels"]["aba_call"]}]},
                                             "finishReason": "STOP"}]}
                    out.append(json.dumps({"status": "", "request": request, "response": reply}))
                out_dir = gcs_destination_prefix + f"/prediction-{len(cloud.submitted) + 1}"
                cloud.blobs[(bucket, out_dir[5 + len(bucket) + 1:] + "/predictions.jsonl")] = "\n".join(out)
                job.output_info = SimpleNamespace(gcs_output_directory=out_dir)
                cloud.submitted.append(job.resource_name)
                cloud.jobs[job.resource_name] = job
                return job

            def done(self) -> bool:
                if cloud.kill_next_poll:
                    cloud.kill_next_poll = False
                    raise _Killed()
                self.state = SimpleNamespace(name="JOB_STATE_SUCCEEDED")
                return True

            def cancel(self) -> None:
                self.state = SimpleNamespace(name="JOB_STATE_CANCELLED")

        self.storage = SimpleNamespace(Client=Client)
        self.aiplatform = SimpleNamespace(init=lambda **kw: None, BatchPredictionJob=Job)


def test_batch_resume_imports_the_earlier_job_and_resubmits_nothing_that_came_back(tmp_path, monkeypatch):
    from engine import config
    from engine.config import STAGES
    from engine.llm import vertex_batch
    from engine.context import StageContext
    from engine.stages.datagen import _record
    from engine.store import RunStore

    cloud = _FakeCloud()
    monkeypatch.setattr(vertex_batch, "_services", lambda: (cloud.aiplatform, cloud.storage))
    cfg = config.load(Path(__file__).resolve().parent.parent / "data" / "configs" / "demo.toml")
    cfg.datagen.llm.backend, cfg.datagen.llm.bucket, cfg.datagen.llm.project = "vertex-batch", "gs://bkt/aba", "p"
    store = RunStore(tmp_path / "run.db", create=True)
    store.init_run("r", "r", "demo", STAGES, ["datagen"])
    store.start_attempt("datagen", 0)
    ctx = StageContext(name="datagen", run_dir=tmp_path, cfg=cfg, store=store)
    calls = _calls(3)  # three traces of one prompt and tier: identical request bodies
    store.add_prompt(calls[0].prompt.key, "safety", calls[0].prompt.turns, "test")

    def record(call, result):
        return _record(ctx, call, result, "vertex-batch", False)

    cloud.kill_next_poll = True  # the first attempt submits, then dies while polling
    with pytest.raises(_Killed):
        vertex_batch.run_batch(ctx, calls, record, poll_s=0)
    assert len(cloud.submitted) == 1 and store.trace_count() == 0
    todo = [c for c in calls if c.key not in store.done_calls(c.key for c in calls)]
    vertex_batch.run_batch(ctx, todo, record, poll_s=0)  # resume
    assert len(cloud.submitted) == 1  # found the earlier job; nothing submitted again
    assert store.done_calls(c.key for c in calls) == {c.key for c in calls} and store.trace_count() == 3
    answers = {t["idx"]: t["answer"] for t in store.traces()}
    assert all(answers[c.idx] == c.key[:63] for c in calls)  # each trace came back to its own call
    vertex_batch.run_batch(ctx, [], record, poll_s=0)  # a later resume: nothing left, nothing submitted
    assert len(cloud.submitted) == 1
