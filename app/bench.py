"""`riffwright bench --gui`: event-loop stalls and lane redraw time under load.

Builds the real window over a 10-minute stereo session (four lanes), starts a generation,
and while it runs scrolls and zooms the lanes, measuring:
- the longest event-loop stall (a 5 ms timer's lateness): the GUI must never freeze;
- the time to recompute every lane's waveform for a new view (peak-pyramid lookup + setData)
  and to repaint the lanes widget.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QElapsedTimer, QObject, QTimer


class StallMonitor(QObject):
    """Measures how late a short repeating timer fires: the event loop's longest stall."""

    def __init__(self, interval_ms: int = 5, parent=None):
        super().__init__(parent)
        self.interval = interval_ms
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.clock = QElapsedTimer()
        self.max_stall_ms = 0.0
        self.stalls: list[float] = []
        self._last = 0

    def start(self) -> None:
        self.max_stall_ms = 0.0
        self.stalls = []
        self.clock.start()
        self._last = self.clock.nsecsElapsed()
        self.timer.start()

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed()
        late = (now - self._last) / 1e6 - self.interval
        self._last = now
        self.stalls.append(late)
        self.max_stall_ms = max(self.max_stall_ms, late)

    def stop(self) -> float:
        self.timer.stop()
        return self.max_stall_ms


def _wait(app, ms: float) -> None:
    from PySide6.QtCore import QEventLoop

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


# the views a musician browses while the bench runs: (start, end) in seconds
_VIEWS = ((0.0, None), (55, 75), (120, 130), (0, 30), (300, 360), (59.5, 61))


def _open_window(bundle_path: str | None, tmp: Path):
    """The real window, offscreen when there is no display, its settings and autosaves in
    `tmp`; (app, window, seconds)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main import build_window
    from app.theme import apply_theme

    app = QApplication.instance() or QApplication(["riffwright-bench"])
    apply_theme(app)
    settings = QSettings(str(tmp / "settings.ini"), QSettings.IniFormat)
    t0 = time.perf_counter()
    win = build_window(settings, model=bundle_path, autosave_root=tmp / "autosave",
                       export_dir=tmp / "exports", use_audio=False, modal_messages=False)
    win.resize(1500, 900)
    win.show()
    app.processEvents()
    return app, win, time.perf_counter() - t0


def _bench_lanes(sr: int, minutes: float, lanes: int) -> list[tuple[str, np.ndarray]]:
    """`lanes` stereo lanes of `minutes`: slowly swelling tones with a little noise."""
    n = int(minutes * 60 * sr)
    rng = np.random.default_rng(0)
    tt = np.arange(n, dtype=np.float32) / sr
    items = []
    for i in range(lanes):
        env = (0.3 + 0.2 * np.sin(2 * np.pi * (0.05 + 0.03 * i) * tt)).astype(np.float32)
        ch = (env * np.sin(2 * np.pi * (80 + 60 * i) * tt)).astype(np.float32)
        noise = rng.standard_normal(n).astype(np.float32) * 0.02
        items.append((f"lane {i + 1}", np.stack([ch + noise, ch - noise])))
    return items


def _import_lanes(app, win, minutes: float, lanes: int) -> float:
    """Add the bench lanes (one undo step) and wait for the playback mix; seconds taken."""
    items = _bench_lanes(win.session.sample_rate, minutes, lanes)
    t1 = time.perf_counter()
    win.ctl.add_audio_tracks(items)
    del items
    app.processEvents()
    import_s = time.perf_counter() - t1
    while win.transport.mixing():  # the playback mix of the new lanes renders in background
        _wait(app, 20)
    _wait(app, 100)
    return import_s


def _model_loaded(app, win, timeout_s: float = 300.0) -> bool:
    deadline = time.perf_counter() + timeout_s
    while win.bridge.generator is None and time.perf_counter() < deadline:
        if not win.bridge.loading:
            break
        _wait(app, 50)
    return win.bridge.generator is not None


class _Browser:
    """Zooms, scrolls and redraws the lanes like a musician browsing the session, timing
    each waveform recompute (`redraws`) and repaint (`paints`) in ms."""

    def __init__(self, app, win, minutes: float):
        self.app, self.win = app, win
        self.views = [(a, minutes * 60 if b is None else b) for a, b in _VIEWS]
        self.redraws: list[float] = []
        self.paints: list[float] = []

    def redraw(self) -> tuple[float, float]:
        a = self.win.lanes.redraw_all()
        t = time.perf_counter()
        self.win.lanes.repaint()
        return a * 1000, (time.perf_counter() - t) * 1000

    def browse(self, seconds: float, until=None) -> None:
        """A new view every 60 ms for `seconds`, or until `until()` says stop."""
        k = 0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end and not (until and until()):
            self.win.lanes.set_visible_range(*self.views[k % len(self.views)])
            r, p = self.redraw()
            self.redraws.append(r)
            self.paints.append(p)
            k += 1
            _wait(self.app, 60)


def _p99(values: list[float]) -> float | None:
    v = sorted(values)
    return v[int(0.99 * (len(v) - 1))] if v else None


def _idle_baseline(app, win, minutes: float) -> dict:
    """The same browsing with no generation: the machine's own baseline."""
    win.lanes.fit()
    browser = _Browser(app, win, minutes)
    idle = [browser.redraw() for _ in range(3)]
    mon = StallMonitor()
    mon.start()
    browser.browse(3.0)
    max_stall = mon.stop()
    return {"idle_redraw_ms": round(statistics.median(a for a, _ in idle), 2),
            "no_generation_max_stall_ms": round(max_stall, 1),
            "no_generation_p99_stall_ms": round(_p99(mon.stalls) or 0, 1)}


def _browse_while_generating(app, win, minutes: float, steps: int, seconds: float) -> dict:
    """Generate `seconds` over a loop region while browsing; stalls, redraws and times."""
    win.ctl.set_loop((60.0, 60.0 + seconds))
    win.ctl.set_recipe_defaults({"prompt": "bench: a bass line", "steps": steps, "takes": 1,
                                 "seed_locked": True})
    done: list[str] = []
    win.sig_generation_done.connect(done.append)
    browser = _Browser(app, win, minutes)
    mon = StallMonitor()
    mon.start()
    g0 = time.perf_counter()
    win.run_action("generate")
    browser.browse(600.0, until=lambda: bool(done))
    gen_s = time.perf_counter() - g0
    max_stall = mon.stop()
    p99 = _p99(mon.stalls)
    return {
        "generation": done[0] if done else "timeout",
        "generation_s": round(gen_s, 2),
        "device": win.panel.device.text(),
        "max_stall_ms": round(max_stall, 1),
        "p99_stall_ms": round(p99, 1) if p99 is not None else None,
        "redraws": len(browser.redraws),
        **_spread("redraw_ms", browser.redraws),
        **_spread("paint_ms", browser.paints),
    }


def _spread(name: str, values: list[float]) -> dict:
    """`name`_median and `name`_max in ms (None when nothing was measured)."""
    return {f"{name}_median": round(statistics.median(values), 2) if values else None,
            f"{name}_max": round(max(values), 2) if values else None}


def run_gui_bench(bundle_path: str | None = None, minutes: float = 10.0, lanes: int = 4,
                  steps: int = 8, seconds: float = 10.0) -> dict:
    """Measure the GUI under a running generation; returns numbers in ms and seconds. The
    window's settings and autosaves (tens of MB for a long session) go to a temporary folder
    that is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="riffwright-bench-"))
    try:
        app, win, startup_s = _open_window(bundle_path, tmp)
        try:
            import_s = _import_lanes(app, win, minutes, lanes)
            if not _model_loaded(app, win):
                return {"error": win.last_message or "the model did not load"}
            idle = _idle_baseline(app, win, minutes)
            busy = _browse_while_generating(app, win, minutes, steps, seconds)
        finally:
            win.close()  # no question asked: the bench's window shows no modal messages
        return {"session_minutes": minutes, "lanes": lanes,
                "startup_window_s": round(startup_s, 3), "import_s": round(import_s, 3),
                **busy, **idle}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run_gui_bench(sys.argv[1] if len(sys.argv) > 1 else None), indent=1))
