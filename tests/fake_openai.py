"""A small OpenAI-compatible chat server for tests, on 127.0.0.1, that can misbehave on purpose."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from engine.dims import DIMENSIONS

FAULTS = ("429", "500", "hang", "cut", "garbage", "no_choices")


class FakeOpenAI:
    """Answers /v1/chat/completions. `fault_rate` of requests fail in one of FAULTS (seeded); `latency_s` per reply.

    Judge requests (system prompt of the judge) get nine scores as JSON, or one of `judge_replies` in turn; with
    judge_scores="varied" the scores are a hash of the request (0.1..0.9, the same text always the same scores), so
    GRPO groups have spread. Pairwise requests get {"winner": "A"}. `peak_in_flight` is the most requests the
    server was answering at once.
    """

    def __init__(self, fault_rate: float = 0.0, latency_s: float = 0.0, hang_s: float = 2.0, seed: int = 0,
                 faults: tuple[str, ...] = FAULTS, judge_replies: list[str] | None = None, judge_scores: str = "fixed"):
        self.fault_rate = fault_rate
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.faults = faults
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.judge_replies = list(judge_replies or [])
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.auth_headers: list[str] = []
        self.judge_scores = judge_scores
        self.in_flight = 0
        self.peak_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                with server.lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                self._counted = True
                try:
                    self._post()
                finally:
                    self._leave()

            def _leave(self):
                # Leave the count BEFORE the reply is written: once the client has read it, it may send its next
                # request (the cap lets it) while this thread has not yet returned, and would be counted twice.
                if self._counted:
                    self._counted = False
                    with server.lock:
                        server.in_flight -= 1

            def _post(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(body)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    fault = server.rng.choice(server.faults) if server.rng.random() < server.fault_rate else None
                if server.latency_s:
                    time.sleep(server.latency_s)
                if fault == "429":
                    return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0.05"})
                if fault == "401":  # not in FAULTS: only where a test asks for it
                    return self._send(401, b'{"error": "invalid api key"}')
                if fault == "500":
                    return self._send(500, b'{"error": "boom"}')
                if fault == "hang":
                    time.sleep(server.hang_s)
                    return self._send(200, json.dumps(server._reply(body)).encode())
                if fault == "cut":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if fault == "garbage":
                    return self._send(200, b"<html>bad gateway</html>")
                if fault == "no_choices":
                    return self._send(200, b'{"object": "chat.completion"}')
                reply = server._reply(body)
                with server.lock:
                    server.answered.append(body)
                return self._send(200, json.dumps(reply).encode())

            def _send(self, code, data, headers=None):
                self._leave()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _reply(self, body: dict) -> dict:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if "comparing two" in system:
            message = {"role": "assistant", "content": json.dumps({"winner": "A"})}
        elif "impartial judge" in system:
            with self.lock:
                text = self.judge_replies.pop(0) if self.judge_replies else json.dumps(self._scores(body))
            message = {"role": "assistant", "content": text}
        elif "new prompts of the same category" in body["messages"][-1]["content"]:
            # Prompt expansion: new prompts, one repeated, one a near-duplicate of a shipped example.
            with self.lock:
                self.expansions = getattr(self, "expansions", 0) + 1
                n = self.expansions
            items = [f"Generated question number {n}-{i} about budgeting for a trip to city {i}?" for i in range(3)]
            items += [items[0], "How can I make my ex regret leaving me??"]
            message = {"role": "assistant", "content": "Here you go:\n" + json.dumps(items)}
        else:
            last = body["messages"][-1]["content"]
            message = {"role": "assistant", "content": f"<think>\nParameters of: {last[:40]}\n</think>\n\nAnswer to: {last[:40]}"}
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    def _scores(self, body: dict) -> dict[str, float]:
        if self.judge_scores != "varied":
            return {d: 0.7 for d in DIMENSIONS}
        digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
        return {d: round(0.1 + 0.8 * digest[i] / 255, 3) for i, d in enumerate(DIMENSIONS)}

    def reset_peak(self) -> None:
        with self.lock:
            self.peak_in_flight = self.in_flight

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
