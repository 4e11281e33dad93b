"""`aba chat RUN`: put a question to the run's models side by side, each answer judged and kept in the run."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import open_run, when
from engine.dims import DIMENSIONS, SHORT
from engine.errors import UserError
from engine.text import inert


def _settings(args: argparse.Namespace):
    from engine.playground.settings import ChatSettings

    s = ChatSettings(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                     thinking=not args.no_think, context=args.context)
    s.check()
    return s


def _models(args: argparse.Namespace, run_dir, store) -> list[str]:
    from engine.playground import specs

    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else [
        m for m in specs.available(run_dir, store) if m in specs.DEFAULT_MODELS]
    for name in names:
        specs.resolve(run_dir, name, store)  # a bad name is one line before any model loads
    return names


def _score_line(a) -> str:
    if a.error:
        return f"  error: {a.error}"
    if a.judge_error:
        return f"  judge failed: {a.judge_error}"
    if not a.scores:
        return ""
    dims = " ".join(f"{SHORT[d]} {a.scores[d]:.2f}" for d in DIMENSIONS)
    total = "n/a" if a.weighted is None else f"{a.weighted:.3f}"
    return f"  weighted {total} | {dims}"


def _stats_line(a) -> str:
    s = a.stats
    if not s:
        return ""
    ttft = "" if s.get("ttft_s") is None else f", first token {s['ttft_s'] * 1000:.0f} ms"
    rate = "" if s.get("tokens_per_s") is None else f", {s['tokens_per_s']:.1f} tok/s"
    return f"  [{a.status}: {s.get('new_tokens')} tokens{rate}{ttft}]" + (f"  note: {a.note}" if a.note else "")


def _one_turn(chat, prompt: str, models: list[str], settings, follow_up: bool, as_json: bool):
    from engine.playground.answers import Turn

    turn = None
    current = None
    out = sys.stdout
    for event in chat.ask(prompt, models, settings, follow_up):
        if event["ev"] == "error" and "turn" not in event:
            raise UserError(event["message"])
        if event["ev"] == "turn":
            turn = Turn.from_event(event)
            continue
        if turn is None:
            continue
        a = turn.apply(event)
        if as_json or a is None:
            continue
        if event["ev"] == "start":
            current = a.model
            out.write(f"\n── {a.model} ({inert(a.source, oneline=True)})\n")
        elif event["ev"] == "text" and a.model == current:
            out.write(inert(event["text"]))
            out.flush()
        elif event["ev"] == "answer":
            out.write("\n" + _stats_line(a) + "\n")
        elif event["ev"] == "error":
            out.write(f"\n── {a.model}: {inert(a.error, oneline=True)}\n")
    if turn is None:
        raise UserError("the chat worker answered nothing")
    if not as_json:
        out.write("\nscores (the run's judge):\n")
        lead = turn.leaders()
        for m, a in turn.answers.items():
            out.write(f"{'*' if m in lead else ' '} {m:<6}{inert(_score_line(a), oneline=True)}\n")
        out.flush()
    return turn


def cmd_chat(args: argparse.Namespace) -> int:
    if args.history:
        return _history(args)
    from engine.playground.client import BlockingChat, WorkerGone

    run_dir, store = open_run(args)
    with store:
        models = _models(args, run_dir, store)
    settings = _settings(args)
    if not models:
        raise UserError("no models to ask: give --models")
    try:
        chat = BlockingChat(run_dir)
    except WorkerGone as err:
        raise UserError(str(err)) from None
    try:
        if args.prompt is not None:
            turn = _one_turn(chat, args.prompt, models, settings, False, args.json)
            if args.json:
                print(json.dumps({"run": run_dir.name, "turn": turn.turn, "prompt": turn.prompt,
                                  "settings": turn.settings, "judge": chat.ready.get("judge"),
                                  "answers": [a.as_dict() for a in turn.answers.values()]}, indent=2))
            return 0 if all(a.status != "error" for a in turn.answers.values()) else 1
        print(f"chat with {', '.join(models)} of run {run_dir.name} ({settings.short()}); judge "
              f"{chat.ready.get('judge')}. Follow-ups continue each model's conversation; /new starts afresh, "
              "/quit or Ctrl-D ends.", flush=True)
        follow_up = False
        while True:
            try:
                line = input("\nyou> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if line.strip() in ("/quit", "/exit"):
                return 0
            if line.strip() == "/new":
                follow_up = False
                print("new conversation")
                continue
            if not line.strip():
                continue
            try:
                _one_turn(chat, line, models, settings, follow_up, False)
            except KeyboardInterrupt:
                chat.client.cancel()
                print("\ncancelled")
            follow_up = True
    except WorkerGone as err:
        raise UserError(str(err)) from None
    finally:
        chat.close()


def _history(args: argparse.Namespace) -> int:
    run_dir, store = open_run(args, readonly=True)
    with store:
        rows = store.exchanges(limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(f"run {run_dir.name}: no kept exchanges yet (`aba chat {run_dir.name}` adds some)")
        return 0
    for r in rows:
        total = "judge failed" if r["weighted"] is None else f"weighted {r['weighted']:.3f}"
        mark = f" [{r['promoted']}]" if r["promoted"] else ""
        print(f"#{r['id']} turn {r['turn']} {when(r['time'])} {r['model']} {r['status']}, {total}{mark}")
        print(f"  Q: {inert(r['prompt'], oneline=True)[:200]}")
        print(f"  A: {inert(r['answer'] or '', oneline=True)[:200]}")
    return 0


def register(add) -> None:
    p = add("chat", cmd_chat, "Ask the run's models (base, sft, grpo, a GGUF, a model folder) one question side by "
                              "side; each answer judged on the nine dimensions and kept in the run.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--models", help="comma-separated: base, sft, grpo, ties, gguf (the run's export), a .gguf file "
                                    "or a model folder (default: base and the run's sft and grpo adapters)")
    p.add_argument("--prompt", help="one question, then exit (without it: an interactive prompt)")
    p.add_argument("--json", action="store_true", help="print the answers, scores and timings as JSON")
    p.add_argument("--history", action="store_true", help="list the run's kept exchanges and exit")
    p.add_argument("--limit", type=int, default=50, help="with --history: the newest N (default 50)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--context", type=int, default=0, help="context in tokens (default: the model's); longer "
                                                          "prompts are cut from the left, with a note")
    p.add_argument("--no-think", action="store_true", help="thinking off (Qwen3's enable_thinking=False)")
