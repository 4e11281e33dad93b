"""llama.cpp (llama-cpp-python) on an exported GGUF, in a process of its own: greedy tokens, logits, tokenization,
quantize.

llama.cpp is native code: a crash there (its AMX Q8_0 path segfaults on some CPUs) must fail this one check, never
the export stage. The stage runs `python -m engine.evaluation.llama_check COMMAND ARGS_JSON` and reads one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def run(command: str, args: dict[str, Any], timeout_s: float = 600,
        module: str = "engine.evaluation.llama_check") -> dict[str, Any]:
    """Run one command in a child process (`module`'s main; tests pass one that crashes). A crash, a timeout or an
    error comes back as {"error": "..."}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    try:
        proc = subprocess.run([sys.executable, "-m", module, command, json.dumps(args)],
                              capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"llama.cpp {command} did not finish in {timeout_s:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        return {"error": f"llama.cpp {command} crashed ({how}): {tail}"}
    return json.loads(lines[-1])


def _llama(path: str, n_ctx: int = 512, **kwargs):
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    # llama.cpp's extra CPU buffer types (weight repacking, the AMX Q8_0 path) crash on some CPUs; the plain path
    # gives the same tokens. Llama() builds its params from llama_model_default_params() and exposes no argument
    # for this field, so in this throw-away process the defaults come with it off.
    if "use_extra_bufts" in {name for name, _ in low.llama_model_params._fields_}:
        default = low.llama_model_default_params

        def without_extra_bufts():
            params = default()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = without_extra_bufts
    return Llama(model_path=path, n_ctx=n_ctx, verbose=False, seed=0, **kwargs)


def _generate(args: dict[str, Any]) -> dict[str, Any]:
    llm = _llama(args["path"])
    got: list[int] = []
    for token in llm.generate(args["ids"], temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if len(got) >= args["n_tokens"] or token == llm.token_eos():
            break
        got.append(int(token))
    return {"tokens": got}


def _logits(args: dict[str, Any]) -> dict[str, Any]:
    """The logits at every position of `ids` (one forward pass over the prompt), to compare with transformers'."""
    llm = _llama(args["path"], logits_all=True)
    llm.eval(args["ids"])
    return {"logits": llm.scores[: len(args["ids"])].tolist()}


def _tokenize(args: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's own tokenizer on `text` (or each of `texts`), without BOS, special tokens parsed."""
    llm = _llama(args["path"])
    texts = args["texts"] if "texts" in args else [args["text"]]
    ids = [[int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)] for text in texts]
    return {"ids": ids if "texts" in args else ids[0]}


def _quantize(args: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args['qtype'].upper()}", None)
    if ftype is None:
        return {"error": f"llama.cpp has no type {args['qtype']!r}"}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["dest"].encode(), params)
    return {"path": args["dest"]} if rc == 0 else {"error": f"llama.cpp quantize to {args['qtype']} failed (code {rc})"}


COMMANDS = {"generate": _generate, "logits": _logits, "tokenize": _tokenize, "quantize": _quantize}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(f"usage: python -m engine.evaluation.llama_check {{{','.join(COMMANDS)}}} ARGS_JSON", file=sys.stderr)
        return 2
    print(json.dumps(COMMANDS[argv[0]](json.loads(argv[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
