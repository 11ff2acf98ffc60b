"""The GUI side of the engine: model loading and generation in a separate process.

`EngineBridge` starts one engine process (`engine.service.main`, multiprocessing spawn) the
first time a model is loaded, sends it `engine.service` requests and turns its events into Qt
signals. Torch lives only there, so the GUI process never shares an interpreter lock with the
sampler and the window stays responsive while it runs; this module imports neither torch nor
the model. Cancel sets a shared event the engine checks before every step, so it returns
within one step. Errors arrive as one-line messages (`sig_error`), never as tracebacks. If
the engine process dies (out of memory, a driver crash), the bridge says so and starts a fresh
one on the next load; if the GUI process dies, the engine exits on its own.

Signals:
- `sig_model_loading(str)`: loading started (bundle path or "default")
- `sig_model_ready(str, str)`: (model name, device label "CPU"/"CUDA"/"MPS")
- `sig_model_failed(str)`: the model could not be loaded (message)
- `sig_progress(object)`: an `engine.service.Progress` (stage, step, total, eta_s, message)
- `sig_finished(object, object)`: (job, list of `engine.service.StemResult`; an arrangement
  brings one per part)
- `sig_cancelled(object)`: (job)
- `sig_error(str)`: a generation failed (message)
- `sig_report(object)`: an `engine.service.Report`, the answer to `inspect()`
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QTimer, Signal

from engine import service


@dataclass
class ModelInfo:
    name: str
    device: str
    path: str
    defaults: dict = field(default_factory=dict)  # the bundle's guidance and steps
    text_prior: bool = False  # the bundle has a text prior
    harmony: bool = False  # the bundle has a harmony probe (harmony guidance)
    rhythm: bool = False  # and a rhythm probe (rhythm guidance)


def list_models() -> list[dict]:
    try:
        from engine.bundles.bundle import list_bundles

        return list_bundles()
    except Exception:  # noqa: BLE001 - a broken models folder must not stop the app
        return []


class EngineBridge(QObject):
    sig_model_loading = Signal(str)
    sig_model_ready = Signal(str, str)
    sig_model_failed = Signal(str)
    sig_progress = Signal(object)
    sig_finished = Signal(object, object)
    sig_cancelled = Signal(object)
    sig_error = Signal(str)
    sig_report = Signal(object)
    _sig_event = Signal(object)  # engine message, delivered on the GUI thread

    def __init__(self, device: str = "auto", parent=None):
        super().__init__(parent)
        self.device = device
        self.generator: ModelInfo | None = None  # set when a model is ready
        self.model_path: str | None = None
        self.loading = False
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._requests = None
        self._events = None
        self._cancel = None
        self._reader: threading.Thread | None = None
        self._job = None
        self._job_id = 0
        self._sig_event.connect(self._on_event)
        self._health = QTimer(self)
        self._health.setInterval(500)
        self._health.timeout.connect(self._check_alive)

    # ---- the engine process
    def _ensure_process(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._requests = self._ctx.Queue()
        self._events = self._ctx.Queue()
        # never let exit wait on a message the engine will not read (it may have died)
        self._requests.cancel_join_thread()
        self._events.cancel_join_thread()
        self._cancel = self._ctx.Event()
        proc = self._ctx.Process(target=service.main, name="riffwright-engine",
                                 args=(self._requests, self._events, self._cancel), daemon=True)
        proc.start()  # raises when the process cannot be started
        self._proc = proc
        events = self._events

        def read():
            while True:
                try:
                    msg = events.get()
                except (EOFError, OSError, ValueError):
                    return
                if msg is None or isinstance(msg, service.Exited):
                    return
                self._sig_event.emit(msg)

        self._reader = threading.Thread(target=read, daemon=True, name="riffwright-engine-rx")
        self._reader.start()
        self._health.start()

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.is_alive():
            return
        code = self._proc.exitcode
        self._health.stop()
        self._proc = None
        self.generator = None
        msg = f"the engine process stopped unexpectedly (exit code {code})"
        if self.loading:
            self.loading = False
            self.sig_model_failed.emit(msg)
        elif self._job is not None:
            self._job = None
            self.sig_error.emit(msg + "; load the model again")

    # ---- model
    def load_model(self, path: str | None = None) -> None:
        """Load a bundle in the engine process (None: the default one)."""
        if self.busy:
            self.sig_error.emit("wait for the current generation to finish before switching models")
            return
        try:
            self._ensure_process()
        except (OSError, RuntimeError) as e:
            self.sig_model_failed.emit(f"cannot start the engine process: {e}")
            return
        self.loading = True
        self.generator = None
        self.sig_model_loading.emit(str(path or "default"))
        self._requests.put(service.Load(str(path) if path else None, self.device))

    # ---- generation
    @property
    def busy(self) -> bool:
        return self._job is not None

    def generate(self, job) -> bool:
        """Send `job` as one `Run`; False when it cannot start (`sig_error` says why)."""
        return self._send(job, lambda job_id, request: service.Run(job_id, request))

    def arrange(self, job, parts: list) -> bool:
        """Send `job` as one `Arrange` of `parts` ((kind, value) pairs, see
        `engine.service.Arrange`): the engine generates every part and answers with one
        `sig_finished` carrying a stem per part."""
        parts = list(parts)
        return self._send(job, lambda job_id, request: service.Arrange(job_id, request, parts))

    def _send(self, job, message) -> bool:
        """Start `job`: `message(job_id, request)` builds the engine request off the GUI
        thread, once the context mix is rendered."""
        if self.generator is None:
            self.sig_error.emit("the model is still loading" if self.loading
                                else "no model is loaded (Generate › Models…)")
            return False
        if self.busy:
            self.sig_error.emit("a generation is already running")
            return False
        self._job_id += 1
        self._job = job
        self._cancel.clear()
        job_id, requests = self._job_id, self._requests

        def send():  # renders the context mix (numpy releases the GIL while it sums)
            try:
                request = job.resolved_request()
            except (MemoryError, ValueError, KeyError) as e:
                self._sig_event.emit(service.JobFailed(job_id, f"cannot prepare the context: {e}"))
                return
            try:
                msg = message(job_id, request)
            except TypeError as e:  # a bug: something that is not plain data in the request
                self._sig_event.emit(service.JobFailed(job_id, f"cannot send the request: {e}"))
                return
            requests.put(msg)

        threading.Thread(target=send, daemon=True, name="riffwright-send").start()
        return True

    def cancel(self) -> None:
        if self._cancel is not None and self._job is not None:
            self._cancel.set()

    def _take_job(self, job_id: int):
        if job_id != self._job_id or self._job is None:
            return None
        job, self._job = self._job, None
        return job

    def inspect(self) -> bool:
        """Ask the engine process for a `Report` (`sig_report`); False when none is running."""
        if self._proc is None or not self._proc.is_alive():
            return False
        self._requests.put(service.Inspect())
        return True

    def _on_event(self, msg) -> None:
        if isinstance(msg, service.Ready):
            self.loading = False
            self.generator = ModelInfo(msg.name, msg.device, msg.path, dict(msg.defaults),
                                       msg.text_prior, msg.harmony, msg.rhythm)
            self.model_path = msg.path
            self.sig_model_ready.emit(msg.name, msg.device)
        elif isinstance(msg, service.LoadFailed):
            self.loading = False
            self.sig_model_failed.emit(msg.message)
        elif isinstance(msg, service.Progress):
            if msg.job_id == self._job_id and self._job is not None:
                self.sig_progress.emit(msg)
        elif isinstance(msg, service.Done):
            job = self._take_job(msg.job_id)
            if job is not None:
                self.sig_finished.emit(job, list(msg.stems))
        elif isinstance(msg, service.JobCancelled):
            job = self._take_job(msg.job_id)
            if job is not None:
                self.sig_cancelled.emit(job)
        elif isinstance(msg, service.JobFailed):
            job = self._take_job(msg.job_id)
            if job is not None:
                self.sig_error.emit(msg.message)
        elif isinstance(msg, service.Report):
            self.sig_report.emit(msg)

    def shutdown(self, timeout_s: float = 3.0) -> None:
        self._health.stop()
        proc = self._proc
        if proc is None:
            return
        self.cancel()
        try:
            self._requests.put(service.Quit())
            proc.join(timeout_s)
        except (OSError, ValueError, AssertionError):
            pass
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)
        try:
            self._events.put(None)  # wake the reader if the engine could not say goodbye
        except (OSError, ValueError):
            pass
        self._proc = None
        self.generator = None
