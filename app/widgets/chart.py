"""A braille line chart with step and value axes; series are min-max downsampled to the plot width first."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

PALETTE = ["#4ea1ff", "#ff8c42", "#5fd068", "#e05d5d", "#b48cff", "#d4b44a", "#4ecdc4", "#f78fb3", "#a0a0a0", "#ffffff"]
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row in cell][col in cell]


@dataclass
class Line:
    label: str
    steps: np.ndarray
    values: np.ndarray
    color: str


def minmax_downsample(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per x-bucket (equal step ranges): bucket centre, min and max of y. Empty buckets are NaN. O(n), vectorised."""
    ok = ~np.isnan(y)
    x, y = x[ok], y[ok]
    centres = np.full(buckets, np.nan)
    lo = np.full(buckets, np.nan)
    hi = np.full(buckets, np.nan)
    if not len(x):
        return centres, lo, hi
    if len(x) > 1 and not np.all(x[1:] >= x[:-1]):  # resumed runs can repeat steps: sort once
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    x0, x1 = float(x[0]), float(x[-1])
    span = (x1 - x0) or 1.0
    edges = x0 + np.arange(buckets) / buckets * span
    starts = np.searchsorted(x, edges, side="left")
    has = np.empty(buckets, dtype=bool)
    has[:-1] = starts[1:] > starts[:-1]
    has[-1] = starts[-1] < len(x)
    if has.any():
        s = starts[has]
        lo[has] = np.minimum.reduceat(y, s)
        hi[has] = np.maximum.reduceat(y, s)
    centres[:] = x0 + (np.arange(buckets) + 0.5) / buckets * span
    return centres, lo, hi


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-2:
        return f"{v:.1e}"
    return f"{v:.3g}"


class LineChart(Widget):
    """Draws `lines` into the widget's area. Set `lines` (and optionally `title`) then call refresh()."""

    DEFAULT_CSS = """
    LineChart { height: 12; min-height: 6; border: round $panel; padding: 0 1; }
    """

    def __init__(self, title: str = "", *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = title
        self.lines: list[Line] = []
        self._cache_key: tuple | None = None
        self._rows: list[Strip] = []

    def set_lines(self, lines: list[Line]) -> None:
        self.lines = lines
        self._cache_key = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        key = (self.size.width, self.size.height, tuple((ln.label, len(ln.values), ln.color) for ln in self.lines),
               id(self.lines))
        if key != self._cache_key:
            self._rows = self.draw(self.size.width, self.size.height)
            self._cache_key = key
        return self._rows[y] if y < len(self._rows) else Strip.blank(self.size.width)

    def draw(self, width: int, height: int) -> list[Strip]:
        """All rows of the chart: plot, x axis, legend."""
        axis_w = 9
        plot_w = max(width - axis_w - 1, 4)
        legend_h = 1 if self.lines else 0
        plot_h = max(height - 1 - legend_h, 2)
        dots_w, dots_h = plot_w * 2, plot_h * 4
        muted = Style(dim=True)
        if not any(ln.values.size for ln in self.lines):
            msg = "waiting for data"
            pad = max((width - len(msg)) // 2, 0)
            return [Strip([Segment(" " * pad + msg, muted)]) if i == height // 2 else Strip.blank(width) for i in range(height)]
        samples = [(ln, *minmax_downsample(ln.steps, ln.values, dots_w)) for ln in self.lines if ln.values.size]
        all_lo = [np.nanmin(lo) for _, _, lo, _ in samples if np.isfinite(lo).any()]
        all_hi = [np.nanmax(hi) for _, _, _, hi in samples if np.isfinite(hi).any()]
        vmin, vmax = (min(all_lo), max(all_hi)) if all_lo else (0.0, 1.0)
        if vmax - vmin < 1e-12:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        xmin = min(float(np.nanmin(ln.steps)) for ln in self.lines if ln.steps.size)
        xmax = max(float(np.nanmax(ln.steps)) for ln in self.lines if ln.steps.size)
        cells = np.zeros((plot_h, plot_w), dtype=np.int32)
        owner = np.full((plot_h, plot_w), -1, dtype=np.int32)
        for li, (ln, _, lo, hi) in enumerate(samples):
            ok = np.isfinite(lo)
            have = np.nonzero(ok)[0]
            if not len(have):
                continue
            # Sparse series (fewer points than dot columns): interpolate across the empty columns.
            cols = np.arange(have[0], have[-1] + 1)
            lo_f, hi_f = np.interp(cols, have, lo[ok]), np.interp(cols, have, hi[ok])
            top = ((vmax - hi_f) / (vmax - vmin) * (dots_h - 1)).round().astype(int)
            bot = ((vmax - lo_f) / (vmax - vmin) * (dots_h - 1)).round().astype(int)
            prev_mid = None
            for c, t, b in zip(cols.tolist(), top.tolist(), bot.tolist()):
                mid = (t + b) // 2
                if prev_mid is not None:  # join to the previous column so the line is continuous
                    t, b = min(t, prev_mid), max(b, prev_mid)
                for r in range(t, b + 1):
                    cells[r // 4, c // 2] |= _BRAILLE_BITS[r % 4][c % 2]
                    owner[r // 4, c // 2] = li
                prev_mid = mid
        strips = []
        for row in range(plot_h):
            value = vmax - (row / max(plot_h - 1, 1)) * (vmax - vmin)
            label = _fmt(value) if row in (0, plot_h // 2, plot_h - 1) else ""
            segs = [Segment(f"{label:>{axis_w}}", muted), Segment("┤" if label else "│", muted)]
            for col in range(plot_w):
                bits = int(cells[row, col])
                if bits:
                    segs.append(Segment(chr(0x2800 + bits), Style(color=samples[owner[row, col]][0].color)))
                else:
                    segs.append(Segment(" "))
            strips.append(Strip(segs))
        left, right = _fmt(xmin), _fmt(xmax)
        gap = max(plot_w - len(left) - len(right), 1)
        strips.append(Strip([Segment(" " * axis_w + "└" + left + " " * gap + right, muted)]))
        if legend_h:
            segs = []
            for ln in self.lines[:10]:
                last = ln.values[~np.isnan(ln.values)]
                tail = f"={_fmt(float(last[-1]))}" if last.size else ""
                segs += [Segment("━ ", Style(color=ln.color)), Segment(f"{ln.label}{tail}  ")]
            strips.append(Strip(segs).crop(0, width))
        return [s.crop(0, width) for s in strips]
