"""The generation workflow, without widgets: start, progress, finish, cancel, arrange.

`GenerationController` sends `Job`s to the engine bridge, turns the engine's per-stage progress
into one bar and one time-left estimate for the whole job, lands the results through the
`SessionController` (one undo step per job). An arrangement is one engine job
(`engine.arrange`, the generator the CLI drives too): the engine generates every part over the
context and the parts before it, part i with seed + i, and its stems land together as one lane
per part in one undo step. It reports with Qt signals and never touches a widget: the window
shows what it says, and the tests drive it with a fake bridge.

Signals:
- `sig_started(object)`: a job went to the engine (the `Job`)
- `sig_progress(object)`: a `JobProgress` for the whole job
- `sig_stopped()`: the running job is over, however it ended (results already landed)
- `sig_landed(object, object, float)`: (job, the new take tracks, seconds it took)
- `sig_done(str)`: the workflow is over, arrangement included: an `Outcome`
- `sig_status(str)`: a line for the status bar
- `sig_message(str)`: a problem to show the musician
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from PySide6.QtCore import QObject, Signal

from app.controller import Job, SessionController, job_fraction
from engine.errors import RiffwrightError

_PART = re.compile(r"^part (\d+)/(\d+): ")  # engine.arrange's progress message prefix


class Outcome(StrEnum):
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "error"


@dataclass(frozen=True)
class JobProgress:
    """The whole job's progress as the status bar shows it."""

    percent: int
    format: str  # inside the bar: "sample 12/30"
    label: str  # beside it: "step 12/30 · about 40 s left"


def fmt_duration(s: float) -> str:
    """A remaining time for people: '45 s', '3 min 25 s'."""
    s = int(round(max(0.0, s)))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


class GenerationController(QObject):
    sig_started = Signal(object)
    sig_progress = Signal(object)
    sig_stopped = Signal()
    sig_landed = Signal(object, object, float)
    sig_done = Signal(str)
    sig_status = Signal(str)
    sig_message = Signal(str)

    def __init__(self, bridge, ctl: SessionController, min_interval_s: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter, parent=None):
        super().__init__(parent)
        self.bridge = bridge
        self.ctl = ctl
        self.min_interval_s = min_interval_s  # progress is forwarded at most this often
        self.clock = clock
        self._started = 0.0
        self._stereo = False
        self._last_progress: tuple[str, float] | None = None  # (stage, when forwarded)
        bridge.sig_progress.connect(self._progress)
        bridge.sig_finished.connect(self._finished)
        bridge.sig_cancelled.connect(self._cancelled)
        bridge.sig_error.connect(self._failed)

    @property
    def busy(self) -> bool:
        return bool(self.bridge.busy)

    def adopt_model(self) -> None:
        """A model is ready: its guidance and steps replace the recipe's wherever the
        musician has not set them (`SessionController.adopt_model_defaults`)."""
        info = self.bridge.generator
        self.ctl.adopt_model_defaults(info.defaults if info else {})

    # ---- start
    def start(self, job: Job) -> bool:
        """Send `job` to the engine; False when the bridge refused it (it says why)."""
        return self._started_if(job, self.bridge.generate(job))

    def start_arrangement(self, prompts: list[str]) -> bool:
        """Generate one part per prompt as one engine job, each part hearing the context
        and the parts before it; a fresh base seed unless it is locked (part i: seed + i)."""
        parts = [("prompt", p) for p in prompts if p]
        if not parts:
            return False
        self.ctl.draw_seed()
        recipe = self.ctl.recipe.replace(prompt="", takes=1, reference_track=None)
        try:
            job = self.ctl.build_job("arrange", recipe)
        except RiffwrightError as e:
            self.sig_message.emit(str(e))
            return False
        job.name = ", ".join(value for _, value in parts)
        job.recipe = self.ctl.recipe
        return self._started_if(job, self.bridge.arrange(job, parts))

    def _started_if(self, job: Job, sent: bool) -> bool:
        if not sent:
            return False
        self._started = self.clock()
        self._stereo = float(job.request.get("stereo_width") or 0) > 0
        self._last_progress = None
        self.sig_started.emit(job)
        self.sig_status.emit(f"generating: {job.name}")
        return True

    def cancel(self) -> bool:
        """Ask the engine to stop the running job (it stops within one step); False when
        nothing runs."""
        if not self.busy:
            return False
        self.bridge.cancel()
        return True

    # ---- engine events
    def _progress(self, p) -> None:
        """One bar and one ETA for the whole job (the engine's own ETA restarts with every
        phase: sampling, the stereo pass, decoding). A burst within `min_interval_s` of the
        same stage is dropped, except its last step."""
        now = self.clock()
        last = self._last_progress
        if (last is not None and last[0] == p.stage and now - last[1] < self.min_interval_s
                and p.step < p.total):
            return
        self._last_progress = (p.stage, now)
        overall = job_fraction(p.stage, min(1.0, p.step / max(1, p.total)), self._stereo)
        part = _PART.match(p.message or "")
        if part:  # an arrangement: the parts before this one are done
            i, n = int(part.group(1)), max(1, int(part.group(2)))
            overall = (i - 1 + overall) / n
        elapsed = now - self._started
        eta = ""
        if overall >= 0.03 and elapsed >= 1.0:
            eta = f" · about {fmt_duration(elapsed * (1.0 - overall) / overall)} left"
        if p.stage in ("sample", "stereo"):
            what = "stereo pass" if p.stage == "stereo" else "step"
            label = f"{what} {p.step}/{p.total}{eta}"
            if part:
                label = f"part {part.group(1)}/{part.group(2)} · {label}"
        else:
            label = (p.message or p.stage) + eta
        self.sig_progress.emit(JobProgress(int(overall * 100), f"{p.stage} {p.step}/{p.total}",
                                           label))

    def _finished(self, job: Job, stems) -> None:
        if job.action == "arrange":
            tracks = self.ctl.land_arrangement(job, stems, job.recipe)
        else:
            tracks = self.ctl.land_results(job, stems, job.recipe)
        self.sig_stopped.emit()
        self.sig_landed.emit(job, tracks, self.clock() - self._started)
        self.sig_done.emit(Outcome.FINISHED)

    def _cancelled(self, _job) -> None:
        self.sig_stopped.emit()
        self.sig_status.emit("generation cancelled — nothing was added")
        self.sig_done.emit(Outcome.CANCELLED)

    def _failed(self, msg: str) -> None:
        """A job failed, or the bridge refused a request. While another job still runs
        (a model switch asked for mid-generation) that one goes on: only the message."""
        if not self.busy:
            self.sig_stopped.emit()
        self.sig_message.emit(msg)
        if not self.busy:
            self.sig_done.emit(Outcome.FAILED)
