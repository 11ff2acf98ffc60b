"""The one app module that touches torch: model loading and generation off the GUI thread.

`EngineBridge` loads a bundle in the background (the window is usable before the model is),
and runs `engine.generate.Generator.run` in a superqt `GeneratorWorker`. Cancel sets a
`threading.Event` the engine checks before every network step and also quits the worker at
its next yield, so it returns within one step. Progress is throttled to ~20 updates a second.
Errors arrive as one-line messages (`sig_error`), never as tracebacks.

Signals:
- `sig_model_loading(str)`: loading started (bundle path)
- `sig_model_ready(str, str)`: (model name, device label "CPU"/"CUDA"/"MPS")
- `sig_model_failed(str)`: the model could not be loaded (message)
- `sig_progress(object)`: `engine.generate.Progress`
- `sig_finished(object, object)`: (job, list[Stem])
- `sig_cancelled(object)`: (job)
- `sig_error(str)`: a generation failed (message)
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import fields

from PySide6.QtCore import QObject, Signal
from superqt.utils import create_worker

from engine.errors import Cancelled, RiffwrightError

PROGRESS_INTERVAL_S = 0.05


def device_label(device) -> str:
    kind = getattr(device, "type", str(device)).split(":")[0].lower()
    return {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}.get(kind, kind.upper())


def _load(path, device):
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1) or 1))
    from engine.bundle import find_bundle, load_bundle
    from engine.generate import Generator, pick_device

    dev = pick_device(device)
    bundle = load_bundle(find_bundle(path), dev)
    return Generator(bundle, dev)


def lower_thread_priority(niceness: int = 10) -> None:
    """Make the calling thread yield the CPU to the GUI thread (Linux nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: harmless
        pass


def _run(generator, request_kwargs: dict, cancel: threading.Event):
    from engine.generate import GenerationRequest

    lower_thread_priority()
    known = {f.name for f in fields(GenerationRequest)}
    req = GenerationRequest(**{k: v for k, v in request_kwargs.items() if k in known})
    gen = generator.run(req, cancel=cancel)
    last = 0.0
    try:
        while True:
            p = next(gen)
            now = time.perf_counter()
            if now - last >= PROGRESS_INTERVAL_S or p.step >= p.total or p.stage == "done":
                last = now
                yield p
            # throttled events are dropped; the engine itself checks `cancel` every step
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def list_models() -> list[dict]:
    try:
        from engine.bundle import list_bundles

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

    def __init__(self, device: str = "auto", parent=None):
        super().__init__(parent)
        self.device = device
        self.generator = None
        self.model_path: str | None = None
        self.loading = False
        self._load_worker = None
        self._worker = None
        self._cancel: threading.Event | None = None
        self._job = None

    # ---- model
    def load_model(self, path: str | None = None) -> None:
        """Load a bundle in the background (None: the default one)."""
        if self.busy:
            self.sig_error.emit("wait for the current generation to finish before switching models")
            return
        self.loading = True
        self.generator = None
        self.sig_model_loading.emit(str(path or "default"))
        w = create_worker(_load, path, self.device, _start_thread=False,
                          _connect={"returned": self._loaded, "errored": self._load_failed})
        self._load_worker = w
        w.start()

    def _loaded(self, generator) -> None:
        self.loading = False
        self.generator = generator
        self.model_path = str(generator.bundle.path)
        self.sig_model_ready.emit(generator.bundle.name, device_label(generator.device))

    def _load_failed(self, exc) -> None:
        self.loading = False
        msg = str(exc) if isinstance(exc, RiffwrightError) else \
            f"the model could not be loaded ({exc.__class__.__name__}: {exc})"
        self.sig_model_failed.emit(msg)

    # ---- generation
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def generate(self, job) -> bool:
        if self.generator is None:
            self.sig_error.emit("the model is still loading" if self.loading
                                else "no model is loaded (Model › choose a bundle)")
            return False
        if self.busy:
            self.sig_error.emit("a generation is already running")
            return False
        self._cancel = threading.Event()
        self._job = job
        w = create_worker(_run, self.generator, job.request, self._cancel, _start_thread=False,
                          _connect={"yielded": self._yielded, "returned": self._returned,
                                    "errored": self._errored, "aborted": self._aborted})
        self._worker = w
        w.start()
        return True

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._worker is not None:
            self._worker.quit()

    def _yielded(self, p) -> None:
        self.sig_progress.emit(p)

    def _done(self):
        job = self._job
        self._worker = None
        self._job = None
        self._cancel = None
        return job

    def _returned(self, stems) -> None:
        cancelled = self._cancel is not None and self._cancel.is_set()
        job = self._done()
        if cancelled or stems is None:
            self.sig_cancelled.emit(job)
        else:
            self.sig_finished.emit(job, stems)

    def _aborted(self) -> None:
        self.sig_cancelled.emit(self._done())

    def _errored(self, exc) -> None:
        job = self._done()
        if isinstance(exc, Cancelled):
            self.sig_cancelled.emit(job)
        elif isinstance(exc, RiffwrightError):
            self.sig_error.emit(str(exc))
        elif isinstance(exc, MemoryError):
            self.sig_error.emit("out of memory: try fewer takes, fewer seconds or the CPU")
        else:
            self.sig_error.emit(f"generation failed: {exc.__class__.__name__}: {exc}")

    def shutdown(self, timeout_ms: int = 3000) -> None:
        self.cancel()
        for w in (self._worker, self._load_worker):
            if w is not None:
                try:
                    w.await_workers(timeout_ms) if hasattr(w, "await_workers") else None
                except Exception:  # noqa: BLE001
                    pass
