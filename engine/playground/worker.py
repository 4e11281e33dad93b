"""The chat worker process: `python -m engine.playground.worker RUN_DIR`. Loads the run's models once and keeps them;
reads one JSON command a line on stdin, writes one JSON event a line on stdout; ends when stdin closes.

Commands: {"op": "ask", "prompt", "models", "settings", "follow_up"}, {"op": "cancel"}, {"op": "new"},
{"op": "quit"}. Events (field "ev"): ready, turn, start, text, answer, scores, error, turn_done, log, fatal.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine import config as config_mod
from engine.errors import UserError
from engine.playground import specs
from engine.playground.settings import ChatSettings
from engine.store import RunStore


class Events:
    """The protocol channel: stdout's original file, kept for events alone; print() and libraries go to stderr."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def __call__(self, ev: str, **data: Any) -> None:
        line = json.dumps({"ev": ev, **data}, ensure_ascii=False)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


class ChatWorker:
    def __init__(self, run_dir: Path, emit: Events):
        self.run_dir = run_dir
        self.emit = emit
        self.cfg = config_mod.load(run_dir / "config.toml")
        self.store = RunStore(run_dir / "run.db")
        self.cancel = threading.Event()
        self.commands: queue.Queue[dict | None] = queue.Queue()
        self.engines: dict[str, Any] = {}  # "run" (shared base), or one per folder / GGUF path
        self.conversations: dict[str, list[dict]] = {}  # each model's own conversation
        self.parents: dict[str, int] = {}  # each model's last kept exchange id
        from engine.playground.judge import AnswerJudge

        self.judge = AnswerJudge(self.cfg, run_dir, self.log)
        llm = self.cfg.judge.llm
        self.judging = ThreadPoolExecutor(max_workers=1 if llm.backend == "offline" else max(1, llm.concurrency),
                                          thread_name_prefix="judge")

    def log(self, message: str) -> None:
        print(f"[playground] {message}", file=sys.stderr, flush=True)
        self.emit("log", message=message)

    # -- commands ----------------------------------------------------------------------------

    def read_stdin(self) -> None:
        """Cancel acts at once (the generation in progress checks it every token); the rest queue in order."""
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError:
                self.emit("error", message=f"bad command line: {line[:80]!r}")
                continue
            if cmd.get("op") == "cancel":
                self.cancel.set()
            else:
                self.commands.put(cmd)
            if cmd.get("op") == "quit":
                break
        self.cancel.set()
        self.commands.put(None)  # stdin closed: the panel or the CLI is gone

    def serve(self) -> None:
        threading.Thread(target=self.read_stdin, name="stdin", daemon=True).start()
        self.emit("ready", pid=os.getpid(), judge=self.judge.label, models=specs.available(self.run_dir, self.store))
        while True:
            cmd = self.commands.get()
            if cmd is None or cmd.get("op") == "quit":
                break
            if cmd.get("op") == "new":
                self.conversations.clear()
                self.parents.clear()
            elif cmd.get("op") == "ask":
                self.cancel.clear()
                try:
                    self.ask(cmd)
                except UserError as err:
                    self.emit("error", message=str(err))
        self.judging.shutdown(wait=True)  # answers already given keep their scores
        self.store.close()

    # -- one question to every chosen model ---------------------------------------------------

    def _engine(self, spec: specs.ModelSpec):
        from engine.playground import engines

        key = "run" if spec.kind == "run" else f"{spec.kind}:{spec.path}"
        if key not in self.engines:
            if spec.kind == "run":
                self.engines[key] = engines.RunModels(self.cfg, self.run_dir, self.log)
            elif spec.kind == "hf":
                self.engines[key] = engines.FolderModel(self.cfg, self.run_dir, self.log, spec.path)
            else:
                self.engines[key] = engines.GGUFModel(spec.path, self.log, self._run_template())
        return self.engines[key]

    def _run_template(self) -> str | None:
        """For a GGUF without a chat template of its own: the run's tokenizer's (its export is this model)."""
        try:
            from engine.models import loading as models

            base = self.cfg.model.base
            return models.load_tokenizer(base if base.startswith(models.DEMO_PREFIX) else base).chat_template
        except Exception:  # no tokenizer reachable offline: the GGUF must then carry its own
            return None

    def ask(self, cmd: dict) -> None:
        settings = ChatSettings.from_dict(cmd.get("settings"))
        prompt = str(cmd.get("prompt") or "")
        if not prompt.strip():
            raise UserError("empty prompt")
        names = list(cmd.get("models") or specs.DEFAULT_MODELS)
        if not cmd.get("follow_up"):
            self.conversations.clear()
            self.parents.clear()
        turn = self.store.next_turn()
        self.emit("turn", turn=turn, models=names, prompt=prompt, settings=settings.as_dict())
        pending = []
        for name in names:
            if self.cancel.is_set():
                self.emit("error", turn=turn, model=name, message="cancelled before it started")
                continue
            pending.append(self._answer(turn, name, prompt, settings))
        for future in pending:
            if future is not None:
                future.result()
        self.emit("turn_done", turn=turn)

    def _answer(self, turn: int, name: str, prompt: str, settings: ChatSettings):
        try:
            spec = specs.resolve(self.run_dir, name, self.store)
            engine = self._engine(spec)
            history = list(self.conversations.get(name, []))
            messages = history + [{"role": "user", "content": prompt}]
            self.emit("start", turn=turn, model=name, source=spec.describe())
            gen = engine.generate(spec, messages, settings, self.cancel,
                                  lambda piece: self.emit("text", turn=turn, model=name, text=piece, t=time.time()))
        except UserError as err:
            self.emit("error", turn=turn, model=name, message=str(err))
            return None
        except Exception as err:  # not the user's doing: the traceback goes to the log, the worker stays up
            import traceback

            traceback.print_exc()
            first = (str(err).strip().splitlines() or [""])[0][:200]
            self.emit("error", turn=turn, model=name, message=f"{type(err).__name__}: {first} (see {self.run_dir / 'playground' / 'worker.log'})")
            return None
        from engine.text import split_think

        reasoning, answer = split_think(gen.text)
        self.emit("answer", turn=turn, model=name, answer=answer, reasoning=reasoning, raw=gen.text, **gen.stats())
        if gen.note:
            self.log(f"{name}: {gen.note}")
        row = dict(turn=turn, parent=self.parents.get(name), time=time.time(), model=name, model_source=spec.describe(),
                   prompt=prompt, history=history, settings=settings.as_dict(), answer=answer, reasoning=reasoning,
                   status=gen.status, note=gen.note or None, prompt_tokens=gen.prompt_tokens, new_tokens=gen.new_tokens,
                   ttft_s=gen.ttft_s, tokens_per_s=gen.tokens_per_s, total_s=gen.total_s, judge=self.judge.label)
        if gen.status != "cancelled":
            self.conversations[name] = messages + [{"role": "assistant", "content": gen.text}]
        return self.judging.submit(self._judge_and_keep, row, messages)

    def _judge_and_keep(self, row: dict, messages: list[dict]) -> None:
        if row["status"] == "cancelled":
            row["judge_error"] = "not judged: cancelled"
            verdict = None
        else:
            verdict = self.judge(messages, row["reasoning"], row["answer"])
            row.update(scores=verdict.scores, weighted=verdict.weighted, judge_error=verdict.error or None)
        try:
            exchange_id = self.store.add_exchange(row)
        except Exception as err:  # a full disk: say it was not kept, never that it was
            self.emit("error", turn=row["turn"], model=row["model"], message=f"answer not kept: {err}")
            exchange_id = None
        if exchange_id is not None and row["status"] != "cancelled":
            self.parents[row["model"]] = exchange_id
        self.emit("scores", turn=row["turn"], model=row["model"], id=exchange_id,
                  scores=None if verdict is None else verdict.scores,
                  weighted=None if verdict is None else verdict.weighted, judge_error=row.get("judge_error"))


def main(argv: list[str]) -> int:
    emit = Events()
    if len(argv) != 1:
        emit("fatal", message="usage: python -m engine.playground.worker RUN_DIR")
        return 2
    try:
        worker = ChatWorker(Path(argv[0]), emit)
    except UserError as err:
        emit("fatal", message=str(err))
        return 2
    worker.serve()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    # The store is closed and every event written: leave now, without waiting on library threads (torch's and
    # the tokenizer's pools kept the interpreter's shutdown waiting for seconds).
    os._exit(code)
