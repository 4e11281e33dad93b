"""Builds the demo base model `demo:tiny-qwen3` for the demo's seed into tiny-qwen3/ (about 1 MB; `make` runs it at set-up, the weights are not committed).

    python data/demo/build_model.py            # seed 3407, the demo's (data/configs/demo.toml)

It runs the very code a run uses when no shipped build fits (engine.models.loading._build_demo_base: the tiny
Qwen3 config, seeded, a few seconds of pre-training on the shipped text), so the demo's first run starts training
at once. built_from.json records the seed and the fingerprint of the tokenizer, the shipped text and the tiny
config; a run uses the shipped weights only while both match, and builds its own otherwise. Rerun this script
after changing any of them (tests/test_demo_model.py fails until you do).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

NAME = "demo:tiny-qwen3"


def build(seed: int, dest: Path) -> Path:
    import torch
    import transformers

    from engine.models import loading as models

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        models._build_demo_base(NAME, seed, out)
        (out / "built_from.json").write_text(json.dumps({
            "name": NAME, "seed": seed, "fingerprint": models._demo_fingerprint(),
            "torch": torch.__version__, "transformers": transformers.__version__,
        }, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out, dest)
    return dest


def main() -> None:
    import tomllib

    seed = tomllib.loads((ROOT / "data" / "configs" / "demo.toml").read_text(encoding="utf-8"))["run"]["seed"]
    dest = build(int(sys.argv[1]) if len(sys.argv) > 1 else seed, Path(__file__).parent / "tiny-qwen3")
    print(f"{dest}: " + ", ".join(f"{p.name} {p.stat().st_size // 1024} KB" for p in sorted(dest.iterdir())))


if __name__ == "__main__":
    main()
