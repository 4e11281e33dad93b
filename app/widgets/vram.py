"""The device panel: VRAM used/total as a gauge, headroom, torch peak, the estimate, history; with no NVIDIA GPU,
the stage process's RAM and CPU and the machine's, labelled as such (sampled by the panel with psutil)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import ProgressBar, Static

from app.run_model import RunModel
from app.widgets.chart import PALETTE, Line, LineChart
from app.widgets.quiet import update_if_changed

MB = 1024 * 1024


@dataclass
class HostSample(Message):
    """What psutil saw: the stage's process tree (None when it is not running) and the whole machine."""

    values: dict
    time: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HostSample)  # a sample not yet shown is superseded by the next


_PROCS: dict[int, object] = {}  # psutil.Process by pid: CPU % is measured between two calls on the same object


def sample_host(pid: int | None) -> dict:
    """RAM and CPU of a process and its children, and of the machine. Called in a thread worker (psutil blocks)."""
    import psutil

    def proc(p: int):
        if p not in _PROCS:
            _PROCS[p] = psutil.Process(p)
        return _PROCS[p]

    vm = psutil.virtual_memory()
    out = {"sys_used_mb": (vm.total - vm.available) / MB, "sys_total_mb": vm.total / MB,
           "sys_cpu": psutil.cpu_percent(interval=None), "cores": psutil.cpu_count() or 1}
    if pid:
        try:
            root = proc(pid)
            tree = [root, *(proc(c.pid) for c in root.children(recursive=True))]
            rss = cpu = 0.0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                    cpu += p.cpu_percent(interval=None)
                except psutil.Error:
                    continue
            out["proc_rss_mb"], out["proc_cpu"] = rss / MB, cpu
        except psutil.Error:
            pass
    return out


class VramPanel(Vertical):
    DEFAULT_CSS = """
    VramPanel { height: auto; border: round $panel; padding: 0 1; }
    VramPanel > #vram-gauge-row { height: 1; }
    VramPanel #vram-gauge-label { width: auto; }
    VramPanel #vram-gauge { width: 1fr; }
    VramPanel > #vram-facts { height: auto; }
    VramPanel > LineChart { height: 4; min-height: 3; border: none; padding: 0; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "VRAM / RAM"
        self.has_gpu = False
        self._host: deque[tuple[float, float]] = deque(maxlen=600)  # (time, process RSS MB) while shown

    def compose(self) -> ComposeResult:
        with Horizontal(id="vram-gauge-row"):
            yield Static("", id="vram-gauge-label")
            yield ProgressBar(total=100, show_eta=False, id="vram-gauge")
        yield Static(Text("sampling GPU memory, or RAM and CPU where there is no NVIDIA GPU…", style="dim"),
                     id="vram-facts")
        yield LineChart(id="vram-history", x_unit="s", y_unit="MB")

    def _gauge(self, total: float, used: float, what: str = "RAM") -> None:
        """The bar, with what it measures and its unit beside it: `RAM 3.1/15.6 GB`."""
        label = Text(f"{what} {used / 1024:.1f}/{total / 1024:.1f} GB ")
        update_if_changed(self.query_one("#vram-gauge-label", Static), label)
        bar = self.query_one(ProgressBar)
        if (bar.total, bar.progress) != (total, used):
            bar.update(total=total, progress=used)

    def reset(self) -> None:
        self._host.clear()

    def update_from(self, model: RunModel, stage: str) -> None:
        used, total = model.get(stage, "vram/used_mb"), model.get(stage, "vram/total_mb")
        self.has_gpu = used is not None and used.last() is not None and total is not None and bool(total.last())
        if not self.has_gpu:
            return  # the RAM/CPU view is drawn from host samples (show_host)
        self.border_title = "VRAM"
        peak, est = model.get(stage, "vram/torch_peak_mb"), model.get(stage, "vram/estimate_mb")
        u, t = used.last() or 0.0, total.last() or 1.0  # type: ignore[union-attr]
        self._gauge(t, u, "VRAM")
        facts = Text(f"used {u / 1024:.2f} / {t / 1024:.2f} GB   headroom {(t - u) / 1024:.2f} GB")
        if peak is not None and peak.last() is not None:
            facts.append(f"\ntorch peak {peak.last() / 1024:.2f} GB")
        if est is not None and est.last() is not None:
            facts.append(f"\nestimate before launch {est.last() / 1024:.2f} GB")
        update_if_changed(self.query_one("#vram-facts", Static), facts)
        lines = []
        for i, (key, label) in enumerate((("vram/used_mb", "used MB"), ("vram/torch_peak_mb", "torch peak MB"))):
            s = model.get(stage, key)
            if s is not None and s.n:
                _, values = s.view()
                lines.append(Line(label, np.arange(len(values), dtype=float), values, PALETTE[i]))
        self.query_one(LineChart).x_unit = "smp"  # one point per VRAM sample (gpu.sample_interval_s apart)
        self.query_one(LineChart).set_lines(lines)

    def show_host(self, sample: HostSample) -> None:
        """No NVIDIA GPU samples: the stage process's RAM and CPU, and the machine's, said as such."""
        if self.has_gpu or not self.query("#vram-gauge-label"):  # a sample that came before the panel's parts
            return
        v = sample.values
        self.border_title = "RAM · CPU (no NVIDIA GPU)"
        self._gauge(v["sys_total_mb"], v["sys_used_mb"])
        facts = Text(f"system RAM {v['sys_used_mb'] / 1024:.1f} / {v['sys_total_mb'] / 1024:.1f} GB   "
                     f"CPU {v['sys_cpu']:.0f}% of {v['cores']} cores")
        if "proc_rss_mb" in v:
            self._host.append((sample.time, v["proc_rss_mb"]))
            facts.append(f"\nstage process RAM {v['proc_rss_mb'] / 1024:.2f} GB   CPU {v['proc_cpu']:.0f}%")
        else:
            facts.append("\nstage process: not running", style="dim")
        update_if_changed(self.query_one("#vram-facts", Static), facts)
        if self._host:
            t = np.array([x for x, _ in self._host]) - self._host[0][0]
            rss = np.array([y for _, y in self._host])
            self.query_one(LineChart).x_unit = "s"
            self.query_one(LineChart).set_lines([Line("stage process RSS", t, rss, PALETTE[0])])
        else:
            self.query_one(LineChart).set_lines([])
