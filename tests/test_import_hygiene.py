"""The UI process stays light: importing app and the light engine parts pulls in no ML or cloud library."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "trl", "unsloth", "peft", "datasets", "accelerate", "bitsandbytes",
         "google.genai", "google.cloud.aiplatform", "vertexai", "llama_cpp", "textual")

LIGHT_ENGINE = ("engine.store", "engine.runner.supervisor", "engine.runner.follow", "engine.registry",
                "engine.config", "engine.dims", "engine.text", "engine.errors", "engine.cli", "engine.cli.live_view",
                "engine.evaluation.agreement")


def _app_modules() -> tuple[str, ...]:
    """Every module of the panel, found on disk: a new screen or widget is covered without editing this list."""
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return tuple(found)


LIGHT = _app_modules() + LIGHT_ENGINE


def _loaded_after(modules: tuple[str, ...]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(out.split())


def test_ui_side_imports_no_heavy_library():
    loaded = _loaded_after(LIGHT)
    bad = [m for m in HEAVY if m in loaded and m != "textual"]
    assert "textual" in loaded  # the panel itself did import
    assert not bad, f"importing the UI side pulled in {bad}"


def test_engine_never_imports_app_or_textual():
    loaded = _loaded_after(("engine.store", "engine.runner.supervisor", "engine.config", "engine.runner.worker", "engine.cli"))
    assert not any(m == "app" or m.startswith("app.") for m in loaded)
    assert "textual" not in loaded


def test_engine_sources_do_not_import_app():
    for path in (ROOT / "engine").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "from app" not in text and "import app" not in text, path
