"""A braille line chart with step and value axes; series are min-max downsampled to the plot width first."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

# Ten colours told apart at a glance, all from the xterm 256-colour cube so that a 256-colour terminal (tmux's
# default) keeps them distinct instead of folding several into one grey. The last is the weighted total.
PALETTE = ["#5fafff", "#ff8700", "#5fd75f", "#ff5f5f", "#af87ff", "#d7d700", "#00d7d7", "#ff87d7", "#d7875f", "#ffffff"]
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row in cell][col in cell]
_BITS = np.array(_BRAILLE_BITS, dtype=np.int32)


@dataclass
class Line:
    label: str
    steps: np.ndarray
    values: np.ndarray
    color: str
    bold: bool = False  # drawn last (on top of the others) and in bold: the weighted total


def is_flat(values: np.ndarray) -> bool:
    """A series that never moves (e.g. harm_avoidance = 1.0 throughout): it must not set the y-range."""
    ok = values[~np.isnan(values)]
    return bool(ok.size) and float(ok.max() - ok.min()) < 1e-9


def last_value(values: np.ndarray) -> float | None:
    """The last value that is not NaN (usually the very last: no copy of the series then)."""
    if values.size and values[-1] == values[-1]:
        return float(values[-1])
    ok = values[~np.isnan(values)]
    return float(ok[-1]) if ok.size else None


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


def _fingerprint(ln: Line) -> tuple:
    n = len(ln.values)
    ends = (float(ln.values[0]), float(ln.values[-1]), float(ln.steps[-1])) if n else ()
    return (ln.label, ln.color, ln.bold, n, *ends)


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

    def __init__(self, title: str = "", *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 x_unit: str = "", y_unit: str = ""):
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = title
        self.x_unit, self.y_unit = x_unit, y_unit  # said on the axes: "0 s … 120 s", "512 MB"
        self.lines: list[Line] = []
        self._cache_key: tuple | None = None
        self._rows: list[Strip] = []

    def set_lines(self, lines: list[Line]) -> bool:
        """Show these lines; a poll that changed nothing in them repaints nothing. True: it will be redrawn."""
        same = [_fingerprint(ln) for ln in lines] == [_fingerprint(ln) for ln in self.lines]
        self.lines = lines
        if not same:
            self.refresh()
        return not same

    def render_line(self, y: int) -> Strip:
        # Redrawn only when the picture can have changed: size, lines, their lengths or their first/last values
        # (EMA on or off changes values, not lengths). A poll that brought nothing for this chart costs nothing.
        key = (self.size.width, self.size.height, tuple(_fingerprint(ln) for ln in self.lines))
        if key != self._cache_key:
            self._rows = self.draw(self.size.width, self.size.height)
            self._cache_key = key
        return self._rows[y] if y < len(self._rows) else Strip.blank(self.size.width)

    def legend(self, width: int, flat: dict[int, bool] | None = None) -> list[Strip]:
        """Every line's key and last value, wrapped over as many rows as the width needs (never cut)."""
        rows: list[list[Segment]] = [[]]
        used = 0
        for ln in sorted(self.lines, key=lambda ln: not ln.bold):  # the total first
            last = last_value(ln.values)
            tail = f"={_fmt(last)}" if last is not None else ""
            is_flat_ = flat[id(ln)] if flat is not None else is_flat(ln.values)
            flat_ = " flat" if is_flat_ and len(self.lines) > 1 else ""
            item = [Segment("━ ", Style(color=ln.color, bold=ln.bold)), Segment(f"{ln.label}{tail}{flat_}", Style(bold=ln.bold))]
            n = 2 + len(ln.label) + len(tail) + len(flat_)
            if used and used + 2 + n > width:
                rows.append([])
                used = 0
            if used:
                rows[-1].append(Segment("  "))
                used += 2
            rows[-1] += item
            used += n
        return [Strip(r).crop(0, width) for r in rows if r]

    def draw(self, width: int, height: int) -> list[Strip]:
        """All rows of the chart: plot, x axis, legend."""
        axis_w = 9
        plot_w = max(width - axis_w - 1, 4)
        flat = {id(ln): is_flat(ln.values) for ln in self.lines}  # once per line: each is a pass over the series
        legend = self.legend(width, flat) if self.lines else []
        legend = legend[: max(height - 3, 1)] if legend else []
        plot_h = max(height - 1 - len(legend), 2)
        dots_w, dots_h = plot_w * 2, plot_h * 4
        muted = Style(dim=True)
        if not any(ln.values.size for ln in self.lines):
            msg = "waiting for data"
            pad = max((width - len(msg)) // 2, 0)
            return [Strip([Segment(" " * pad + msg, muted)]) if i == height // 2 else Strip.blank(width) for i in range(height)]
        # The bold line (the total) is drawn last, so it stays on top where lines cross.
        ordered = sorted((ln for ln in self.lines if ln.values.size), key=lambda ln: ln.bold)
        samples = [(ln, *minmax_downsample(ln.steps, ln.values, dots_w)) for ln in ordered]
        # Robust y-range: a flat series (a constant component) does not stretch the axis when others move.
        moving = [smp for smp in samples if not flat[id(smp[0])]] or samples
        all_lo = [np.nanmin(lo) for _, _, lo, _ in moving if np.isfinite(lo).any()]
        all_hi = [np.nanmax(hi) for _, _, _, hi in moving if np.isfinite(hi).any()]
        vmin, vmax = (min(all_lo), max(all_hi)) if all_lo else (0.0, 1.0)
        if vmax - vmin < 1e-12:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        pad = (vmax - vmin) * 0.05
        vmin, vmax = vmin - pad, vmax + pad
        xmin = min(float(np.nanmin(ln.steps)) for ln in ordered if ln.steps.size)
        xmax = max(float(np.nanmax(ln.steps)) for ln in ordered if ln.steps.size)
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
            # Join each column to the previous one's middle so the line is continuous; vectorised over columns.
            mid = (top + bot) // 2
            prev = np.concatenate(([mid[0]], mid[:-1]))
            top, bot = np.minimum(top, prev), np.maximum(bot, prev)
            top, bot = np.clip(top, 0, dots_h), np.clip(bot, -1, dots_h - 1)  # outside the range: clipped
            # Every (dot row, dot column) of the line at once: column c covers rows top[c]..bot[c].
            lengths = np.maximum(bot - top + 1, 0)
            if not lengths.sum():
                continue
            cc = np.repeat(cols, lengths)
            rr = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(top, lengths)
            np.bitwise_or.at(cells, (rr // 4, cc // 2), _BITS[rr % 4, cc % 2])
            owner[rr // 4, cc // 2] = li
        styles = [Style(color=ln.color, bold=ln.bold) for ln, *_ in samples]
        # Each row's characters at once (braille code points, a space where no dot is set), cut into one segment per
        # run of cells drawn by the same line (blank runs unstyled).
        owner[cells == 0] = -1
        codes = np.where(cells > 0, cells + 0x2800, 0x20).astype("<u4")
        cuts = owner[:, 1:] != owner[:, :-1]
        strips = []
        shown = set()
        for row in range(plot_h):
            value = vmax - (row / max(plot_h - 1, 1)) * (vmax - vmin)
            label = _fmt(value) if row in (0, plot_h // 2, plot_h - 1) else ""
            if label in shown:  # a narrow range on a short chart: one label per value, not the same one twice
                label = ""
            shown.add(label)
            if label and self.y_unit and len(label) + 1 + len(self.y_unit) <= axis_w:
                label = f"{label} {self.y_unit}"
            segs = [Segment(f"{label:>{axis_w}}", muted), Segment("┤" if label else "│", muted)]
            text = codes[row].tobytes().decode("utf-32-le")
            who = owner[row]
            bounds = [0, *(np.flatnonzero(cuts[row]) + 1).tolist(), plot_w]
            for a, b in zip(bounds, bounds[1:]):
                w = int(who[a])
                segs.append(Segment(text[a:b], styles[w]) if w >= 0 else Segment(text[a:b]))
            strips.append(Strip(segs))
        unit = f" {self.x_unit}" if self.x_unit else ""
        left, right = _fmt(xmin) + unit, _fmt(xmax) + unit
        gap = max(plot_w - len(left) - len(right), 1)
        strips.append(Strip([Segment(" " * axis_w + "└" + left + " " * gap + right, muted)]))
        strips += legend
        return [s if s.cell_length <= width else s.crop(0, width) for s in strips]  # a Strip costs: crop only when wide
