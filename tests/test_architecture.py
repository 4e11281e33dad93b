"""Which way imports go: the import-linter contracts in pyproject.toml hold, and no two modules import each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports.exe" if os.name == "nt" else "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))  # the tree under test, not whatever is on the path already
    return subprocess.run([str(LINT), "--no-cache"], capture_output=True, text=True, cwd=root, env=env, timeout=300)


def module_cycles(graph: grimp.ImportGraph, packages: tuple[str, ...]) -> list[list[str]]:
    """One shortest cycle through each module-to-module import that has a way back (imports inside functions count)."""
    ours = sorted(m for m in graph.modules if m.split(".")[0] in packages)
    cycles, seen = [], set()
    for importer in ours:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.split(".")[0] not in packages or (importer, imported) in seen:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append([importer, *back])
                seen.update(zip(back, back[1:]))
    return cycles


def test_import_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_contract_breaks_when_the_engine_imports_the_panel(tmp_path):
    """The contract can fail: a copy of the tree with `import app` in an engine module is refused."""
    for name in ("engine", "app"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "engine" / "dims.py").open("a", encoding="utf-8") as f:
        f.write("\nimport app  # noqa: E402,F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "engine never imports app" in proc.stdout and "engine.dims -> app" in proc.stdout


def test_layers_contract_breaks_when_a_lower_wing_imports_a_higher_one(tmp_path):
    """The layers contract can fail: a copy of the tree where model loading imports the runner, even inside a
    function, is refused, and lint-imports names the import."""
    for name in ("engine", "app"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "engine" / "models" / "loading.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n    import engine.runner.supervisor  # noqa: F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the wings in layers, one way" in proc.stdout and "BROKEN" in proc.stdout
    assert "engine.models.loading -> engine.runner.supervisor" in proc.stdout


def test_no_module_imports_itself_round_about():
    graph = grimp.build_graph("engine", "app", cache_dir=None)
    cycles = module_cycles(graph, ("engine", "app"))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_sees_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loopy import b\n")
    (pkg / "b.py").write_text("def f():\n    from loopy import c\n")  # a lazy import still closes the loop
    (pkg / "c.py").write_text("import loopy.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cycles = module_cycles(grimp.build_graph("loopy", cache_dir=None), ("loopy",))
    assert cycles == [["loopy.a", "loopy.b", "loopy.c", "loopy.a"]]
