"""What blocks the panel's event loop: runs a bench of bench/ui_panel.py and reports every event-loop step that held
the loop longer than a threshold, named by the messages and timers it handled, and where its time went (a sampling
profiler on the UI thread: the functions seen most often while a slow step ran).

    python bench/loopwatch.py [switch|training|traces|live|playground] [--ms 20] [--top 25] [--no-sample] [--quick]

(training by default; --quick: the benches' quick sizes, to check the tool runs.)

No third-party profiler: asyncio's Handle._run is timed, MessagePump._dispatch_message and Timer._tick name what ran,
and a thread samples the UI thread's stack (sys._current_frames) every millisecond.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import sys
import threading
import time

from _util import ROOT  # noqa: F401 - puts the repository on the path

SLOW_S = 0.02


class LoopWatch:
    def __init__(self, slow_s: float = SLOW_S, sampling: bool = True) -> None:
        self.sampling = sampling  # the sampler's stacks are many objects: they lengthen the GC's full collections
        self.slow_s = slow_s
        self.slow: list[tuple[float, float, tuple[str, ...]]] = []  # (start, end, labels)
        self.steps = 0
        self.busy_s = 0.0
        self.touched: dict[object, list[str]] = collections.defaultdict(list)
        self.total: collections.Counter = collections.Counter()  # seconds per label, every step (shared evenly)
        self.samples: list[tuple[float, tuple]] = []
        self.main = threading.main_thread().ident
        self._stop = threading.Event()

    def install(self) -> None:
        from textual.message_pump import MessagePump
        from textual.timer import Timer

        watch = self
        handle_run = asyncio.events.Handle._run

        def timed_run(handle):
            owner = getattr(handle._callback, "__self__", None)
            t0 = time.perf_counter()
            try:
                return handle_run(handle)
            finally:
                dt = time.perf_counter() - t0
                watch.steps += 1
                watch.busy_s += dt
                labels = watch.touched.pop(owner, None) if owner is not None else None
                for label in dict.fromkeys(labels or ()):
                    watch.total[label] += dt / len(set(labels))
                if dt > watch.slow_s:
                    if not labels:
                        cb = handle._callback
                        labels = [getattr(cb, "__qualname__", repr(cb))[:80]]
                        if isinstance(owner, asyncio.Task):
                            labels = [owner.get_coro().__qualname__]
                    watch.slow.append((t0, t0 + dt, tuple(dict.fromkeys(labels))))

        asyncio.events.Handle._run = timed_run

        dispatch = MessagePump._dispatch_message

        async def timed_dispatch(pump, message):
            task = asyncio.current_task()
            watch.touched[task].append(f"{type(pump).__name__}<-{type(message).__name__}")
            return await dispatch(pump, message)

        MessagePump._dispatch_message = timed_dispatch

        tick = Timer._tick

        async def timed_tick(timer, *, next_timer, count):
            cb = timer._callback
            name = getattr(cb, "__qualname__", None) or timer.name
            watch.touched[asyncio.current_task()].append(f"timer:{name}")
            return await tick(timer, next_timer=next_timer, count=count)

        Timer._tick = timed_tick
        if self.sampling:
            threading.Thread(target=self._sample, daemon=True).start()
        import gc

        self.gcs: list[tuple[float, float, int, int]] = []  # (start, end, generation, collected)
        started = {}

        def on_gc(phase, info):
            if phase == "start":
                started["t"] = time.perf_counter()
            else:
                self.gcs.append((started.get("t", time.perf_counter()), time.perf_counter(), info["generation"],
                                 info["collected"]))

        gc.callbacks.append(on_gc)

    def _sample(self) -> None:
        sys.setswitchinterval(0.001)
        while not self._stop.is_set():
            frame = sys._current_frames().get(self.main)
            stack = []
            try:  # the main thread runs on meanwhile: a frame can go away under the walk
                while frame is not None:
                    code = frame.f_code
                    stack.append((code.co_filename, frame.f_lineno if len(stack) == 0 else code.co_firstlineno,
                                  code.co_qualname))
                    frame = frame.f_back
            except AttributeError:
                stack = []
            if stack:
                self.samples.append((time.perf_counter(), tuple(stack)))
            time.sleep(0.001)

    def report(self, top: int = 25) -> None:
        self._stop.set()
        print(f"loopwatch: {self.steps} loop steps, {self.busy_s:.1f} s busy; {len(self.slow)} steps over "
              f"{self.slow_s * 1000:.0f} ms")
        for gen in (0, 1, 2):
            ds = [t1 - t0 for t0, t1, g, _ in self.gcs if g == gen]
            if ds:
                print(f"loopwatch: gc generation {gen}: {len(ds)} collections, max {max(ds) * 1000:.1f} ms, "
                      f"sum {sum(ds) * 1000:.0f} ms")
        print("loopwatch: busy time by what ran (all steps)")
        for label, secs in self.total.most_common(top):
            print(f"  {secs * 1000:8.0f} ms  {label}")
        self.threads()
        by_label: dict[tuple, list[float]] = collections.defaultdict(list)
        for t0, t1, labels in self.slow:
            by_label[labels].append(t1 - t0)
        rows = sorted(by_label.items(), key=lambda kv: -sum(kv[1]))
        for labels, ds in rows[:top]:
            print(f"  {len(ds):4d} x  max {max(ds) * 1000:6.0f} ms  sum {sum(ds) * 1000:7.0f} ms  {' | '.join(labels)[:200]}")
        # Where the slow steps' time went: functions by inclusive share of samples taken inside them.
        idx = 0
        samples = self.samples
        incl: collections.Counter = collections.Counter()
        own: collections.Counter = collections.Counter()
        n = 0
        for t0, t1, _ in sorted(self.slow):
            while idx < len(samples) and samples[idx][0] < t0:
                idx += 1
            j = idx
            while j < len(samples) and samples[j][0] <= t1:
                stack = samples[j][1]
                n += 1
                own[_name(stack[0])] += 1
                for f in set(_name(fr, False) for fr in stack):
                    incl[f] += 1
                j += 1
        print(f"loopwatch: {n} samples inside slow steps; inclusive (function: share of samples)")
        for f, c in incl.most_common(top * 3):
            print(f"  {c / max(n, 1):5.1%}  {f}")
        print("loopwatch: own time (line)")
        for f, c in own.most_common(top):
            print(f"  {c / max(n, 1):5.1%}  {f}")


    @staticmethod
    def threads() -> None:
        """CPU seconds of every thread of this process (Linux /proc), by name."""
        import os

        names = {t.native_id: t.name for t in threading.enumerate()}
        tick = os.sysconf("SC_CLK_TCK")
        rows = []
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(stat[11]) + int(stat[12])) / tick
            rows.append((cpu, names.get(int(tid), f"tid {tid} (ended or native)")))
        print("loopwatch: CPU by live thread: " + ", ".join(f"{n} {c:.1f} s" for c, n in sorted(rows, reverse=True)[:8]))


def _name(fr: tuple, line: bool = True) -> str:
    path, lineno, name = fr
    short = path.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
    return f"{short}:{name}" + (f":{lineno}" if line else "")


def main() -> None:
    import ui_panel
    from ui_live import traces_under_load

    from ui_live import SIZE

    if "--quick" in sys.argv:
        SIZE.quick()
    args = [a for a in sys.argv[1:] if not a.startswith("--") and not a.replace(".", "").isdigit()]
    which = args[0] if args else "training"
    slow = float(sys.argv[sys.argv.index("--ms") + 1]) / 1000 if "--ms" in sys.argv else SLOW_S
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    watch = LoopWatch(slow, "--no-sample" not in sys.argv)
    watch.install()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if which == "switch":
            asyncio.run(ui_panel.switch_keys(root))
        elif which == "training":
            asyncio.run(ui_panel.training_keys(root))
        elif which == "traces":
            asyncio.run(ui_panel.traces_keys(root, ui_panel.many_traces(root)))
        elif which == "live":
            asyncio.run(traces_under_load(root, ui_panel.many_traces(root)))
        elif which == "playground":
            asyncio.run(ui_panel.playground_keys(root))
    watch.report(top)


if __name__ == "__main__":
    main()
