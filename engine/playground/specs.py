"""Which model a name means in a run: base, an adapter stage (sft, grpo, ties), the run's GGUF, or any path."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UserError

ADAPTER_STAGES = ("sft", "grpo", "ties")
DEFAULT_MODELS = ("base", "sft", "grpo")


@dataclass(frozen=True)
class ModelSpec:
    """One chat model. kind: "run" (the run's base with `adapters` active, stacked in order), "hf" (a local model
    folder, loaded on its own), "gguf" (a file run by llama.cpp)."""

    name: str
    kind: str
    path: str = ""
    adapters: tuple[tuple[str, str], ...] = field(default=())  # (adapter name, folder)

    def describe(self) -> str:
        if self.kind == "run":
            return "run base" + "".join(f" + {n} adapter" for n, _ in self.adapters)
        return f"{self.kind}: {self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path, "adapters": [list(a) for a in self.adapters]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["name"], d["kind"], d.get("path", ""), tuple(tuple(a) for a in d.get("adapters", [])))


def adapter_dir(run_dir: Path, stage: str, store=None) -> Path:
    """The stage's adapter in this run: its folder's adapter/, else the newest adapter artifact it recorded inside
    this run folder (a run copied or moved elsewhere keeps its old absolute paths in the table: never followed)."""
    own = run_dir / stage / "adapter"
    if (own / "adapter_config.json").exists() or store is None:
        return own
    for art in reversed(store.artifacts(stage, "adapter")):
        path = Path(art["path"])
        if path.is_relative_to(run_dir.resolve()) and (path / "adapter_config.json").exists():
            return path
    return own


def _trained_on(adapter: Path) -> str:
    try:
        return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path") or ""
    except (OSError, json.JSONDecodeError):
        return ""  # the loader says what is wrong with it


def resolve(run_dir: Path, name: str, store=None) -> ModelSpec:
    """A model name from the user (--models, the screen's model list) as a spec; a clear one-line error if it is
    neither a known name nor an existing path. Adapters are checked when they load, in the worker."""
    name = name.strip()
    if name == "base":
        return ModelSpec("base", "run")
    if name in ADAPTER_STAGES:
        adapter = adapter_dir(run_dir, name, store)
        stack: list[tuple[str, str]] = []
        # GRPO (and TIES) trained on the SFT adapter merged into the base: base + SFT delta + its own delta.
        if name != "sft" and Path(_trained_on(adapter)).name == "merged" and Path(_trained_on(adapter)).parent.name == "sft":
            stack.append(("sft", str(adapter_dir(run_dir, "sft", store))))
        stack.append((name, str(adapter)))
        return ModelSpec(name, "run", adapters=tuple(stack))
    if name == "gguf":
        arts = store.artifacts("export", "gguf") if store is not None else []
        if not arts:
            raise UserError(f"model 'gguf': run {run_dir.name} has no exported GGUF; run its export stage, or give a .gguf path")
        return ModelSpec("gguf", "gguf", arts[-1]["path"])
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"model {name!r}: no such GGUF file")
        return ModelSpec(path.name, "gguf", str(path.resolve()))
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            return ModelSpec(path.name, "run", adapters=((path.name, str(path.resolve())),))
        if not (path / "config.json").exists():
            raise UserError(f"model {name!r}: not a model folder (no config.json)")
        return ModelSpec(path.name, "hf", str(path.resolve()))
    raise UserError(f"model {name!r}: not base, sft, grpo, ties, gguf, a .gguf file or a model folder")


def available(run_dir: Path, store=None) -> list[str]:
    """The run's own models that exist: base, and each stage whose adapter is there; gguf when exported."""
    names = ["base"] + [s for s in ADAPTER_STAGES if (adapter_dir(run_dir, s, store) / "adapter_config.json").exists()]
    if store is not None and store.artifacts("export", "gguf"):
        names.append("gguf")
    return names
