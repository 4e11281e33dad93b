"""The VRAM panel: device used/total as a gauge, headroom, torch peak, the pre-launch estimate, and history."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from app.watch import RunModel
from app.widgets.chart import PALETTE, Line, LineChart


class VramPanel(Vertical):
    DEFAULT_CSS = """
    VramPanel { height: auto; border: round $panel; padding: 0 1; }
    VramPanel > ProgressBar { width: 100%; }
    VramPanel > #vram-facts { height: auto; }
    VramPanel > LineChart { height: 8; border: none; padding: 0; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "VRAM"

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=100, show_eta=False, id="vram-gauge")
        yield Static(id="vram-facts")
        yield LineChart(id="vram-history")

    def update_from(self, model: RunModel, stage: str) -> None:
        used, total = model.get(stage, "vram/used_mb"), model.get(stage, "vram/total_mb")
        peak, est = model.get(stage, "vram/torch_peak_mb"), model.get(stage, "vram/estimate_mb")
        gauge = self.query_one(ProgressBar)
        facts = Text()
        if used is not None and used.last() is not None and total is not None and total.last():
            u, t = used.last() or 0.0, total.last() or 1.0
            gauge.update(total=t, progress=u)
            facts.append(f"used {u / 1024:.2f} / {t / 1024:.2f} GB   headroom {(t - u) / 1024:.2f} GB")
        else:
            gauge.update(total=100, progress=0)
            facts.append("no GPU samples for this stage (no NVIDIA GPU, or not started)", style="dim")
        if peak is not None and peak.last() is not None:
            facts.append(f"\ntorch peak {peak.last() / 1024:.2f} GB")
        if est is not None and est.last() is not None:
            facts.append(f"\nestimate before launch {est.last() / 1024:.2f} GB")
        self.query_one("#vram-facts", Static).update(facts)
        lines = []
        for i, (key, label) in enumerate((("vram/used_mb", "used MB"), ("vram/torch_peak_mb", "torch peak MB"))):
            s = model.get(stage, key)
            if s is not None and s.n:
                steps, values = s.view()
                lines.append(Line(label, np.arange(len(values), dtype=float), values, PALETTE[i]))
        self.query_one(LineChart).set_lines(lines)
