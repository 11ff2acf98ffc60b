"""`riffwright bench --gui`: event-loop stalls and lane redraw time under load.

Builds the real window over a 10-minute stereo session (four lanes), starts a generation,
and while it runs scrolls and zooms the lanes, measuring:
- the longest event-loop stall (a 5 ms timer's lateness): the GUI must never freeze;
- the time to recompute every lane's waveform for a new view (peak-pyramid lookup + setData)
  and to repaint the lanes widget.
"""

from __future__ import annotations

import os
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


def run_gui_bench(bundle_path: str | None = None, minutes: float = 10.0, lanes: int = 4,
                  steps: int = 8, seconds: float = 10.0) -> dict:
    """Measure the GUI under a running generation; returns numbers in ms and seconds."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main import build_window
    from app.theme import apply_theme

    app = QApplication.instance() or QApplication(["riffwright-bench"])
    apply_theme(app)
    tmp = Path(tempfile.mkdtemp(prefix="riffwright-bench-"))
    settings = QSettings(str(tmp / "settings.ini"), QSettings.IniFormat)
    t0 = time.perf_counter()
    win = build_window(settings, model=bundle_path, autosave_root=tmp / "autosave",
                       export_dir=tmp / "exports", use_audio=False, modal_messages=False)
    win.resize(1500, 900)
    win.show()
    app.processEvents()
    startup_s = time.perf_counter() - t0

    sr = win.session.sample_rate
    n = int(minutes * 60 * sr)
    rng = np.random.default_rng(0)
    items = []
    tt = np.arange(n, dtype=np.float32) / sr
    for i in range(lanes):
        env = (0.3 + 0.2 * np.sin(2 * np.pi * (0.05 + 0.03 * i) * tt)).astype(np.float32)
        ch = (env * np.sin(2 * np.pi * (80 + 60 * i) * tt)).astype(np.float32)
        noise = rng.standard_normal(n).astype(np.float32) * 0.02
        items.append((f"lane {i + 1}", np.stack([ch + noise, ch - noise])))
    del tt
    t1 = time.perf_counter()
    win.ctl.add_audio_tracks(items)
    del items
    app.processEvents()
    import_s = time.perf_counter() - t1
    while win.transport.mixing():  # the playback mix of the new lanes renders in background
        _wait(app, 20)
    _wait(app, 100)

    deadline = time.perf_counter() + 300
    while win.bridge.generator is None and time.perf_counter() < deadline:
        if not win.bridge.loading and win.bridge.generator is None:
            break
        _wait(app, 50)
    if win.bridge.generator is None:
        win.close()
        return {"error": win.last_message or "the model did not load"}

    def redraw() -> tuple[float, float]:
        a = win.lanes.redraw_all()
        t = time.perf_counter()
        win.lanes.repaint()
        return a * 1000, (time.perf_counter() - t) * 1000

    views = [(0, minutes * 60), (55, 75), (120, 130), (0, 30), (300, 360), (59.5, 61)]

    def exercise(seconds_: float, until=None) -> tuple[list[float], list[float]]:
        """Zoom/scroll and redraw every 60 ms, like a musician browsing the session."""
        rs, ps = [], []
        k = 0
        t_end = time.perf_counter() + seconds_
        while time.perf_counter() < t_end and not (until and until()):
            x0, x1 = views[k % len(views)]
            win.lanes.set_visible_range(x0, x1)
            r, p = redraw()
            rs.append(r)
            ps.append(p)
            k += 1
            _wait(app, 60)
        return rs, ps

    # the same browsing with no generation: the machine's own baseline
    win.lanes.fit()
    idle = [redraw() for _ in range(3)]
    mon0 = StallMonitor()
    mon0.start()
    exercise(3.0)
    idle_max_stall = mon0.stop()
    idle_p99 = sorted(mon0.stalls)[int(0.99 * (len(mon0.stalls) - 1))] if mon0.stalls else 0

    win.ctl.set_loop((60.0, 60.0 + seconds))
    win.ctl.set_recipe_defaults({"prompt": "bench: a bass line", "steps": steps, "takes": 1,
                                 "seed_locked": True})
    done: list[str] = []
    win.sig_generation_done.connect(done.append)
    mon = StallMonitor()
    mon.start()
    g0 = time.perf_counter()
    win.run_action("generate")
    redraws, paints = exercise(600.0, until=lambda: bool(done))
    gen_s = time.perf_counter() - g0
    max_stall = mon.stop()
    stalls = sorted(mon.stalls)
    result = {
        "session_minutes": minutes,
        "lanes": lanes,
        "startup_window_s": round(startup_s, 3),
        "import_s": round(import_s, 3),
        "generation": done[0] if done else "timeout",
        "generation_s": round(gen_s, 2),
        "device": win.panel.device.text(),
        "max_stall_ms": round(max_stall, 1),
        "p99_stall_ms": round(stalls[int(0.99 * (len(stalls) - 1))], 1) if stalls else None,
        "redraws": len(redraws),
        "redraw_ms_median": round(statistics.median(redraws), 2) if redraws else None,
        "redraw_ms_max": round(max(redraws), 2) if redraws else None,
        "paint_ms_median": round(statistics.median(paints), 2) if paints else None,
        "paint_ms_max": round(max(paints), 2) if paints else None,
        "idle_redraw_ms": round(statistics.median(a for a, _ in idle), 2),
        "no_generation_max_stall_ms": round(idle_max_stall, 1),
        "no_generation_p99_stall_ms": round(idle_p99, 1),
    }
    win.session.dirty = False
    win.close()
    return result


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run_gui_bench(sys.argv[1] if len(sys.argv) > 1 else None), indent=1))
