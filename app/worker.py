"""The engine process: loads the model and runs generations away from the GUI process.

Qt-free. `engine_main` is the entry point of a `multiprocessing` (spawn) child started by
`app.bridge.EngineBridge`. Running torch in its own process means the GUI never waits for
the generation's interpreter lock: the window stays smooth even on a 2-core machine.

Protocol (tuples through two queues):
- to the engine:  ("load", path|None, device) · ("run", job_id, request_kwargs) · ("quit",)
- from the engine: ("ready", name, device_label, path, defaults, has_text_prior) ·
  ("load_failed", message) ·
  ("progress", job_id, stage, step, total, eta_s, message) · ("done", job_id, [StemResult]) ·
  ("cancelled", job_id) · ("error", job_id, message)
Cancel is a shared `multiprocessing.Event` that the engine checks before every step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields

PROGRESS_INTERVAL_S = 0.05
# the bundle's own defaults the panel adopts when a model loads (guidance suits each model)
MODEL_DEFAULT_KEYS = ("cfg_context", "cfg_clap", "steps")


@dataclass
class StemResult:
    """A generated stem as it crosses the process boundary (same fields as engine Stem)."""

    audio: object  # np.ndarray (channels, T) float32
    sample_rate: int
    seed: int
    take: int
    provenance: dict


def device_label(device) -> str:
    kind = getattr(device, "type", str(device)).split(":")[0].lower()
    return {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}.get(kind, kind.upper())


def lower_priority(niceness: int = 10) -> None:
    """Let the GUI process win the CPU when both want it."""
    try:
        os.nice(niceness)
    except (AttributeError, OSError):  # not POSIX, or not allowed: harmless
        pass


def error_message(exc: BaseException, doing: str) -> str:
    from engine.errors import RiffwrightError

    if isinstance(exc, RiffwrightError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: try fewer takes, fewer seconds or the CPU"
    return f"{doing} failed: {exc.__class__.__name__}: {exc}"


def run_job(generator, job_id: int, kwargs: dict, cancel, emit) -> None:
    """Run one request, emitting progress (throttled) and the result or the error."""
    from engine.errors import Cancelled
    from engine.generate import GenerationRequest

    try:
        known = {f.name for f in fields(GenerationRequest)}
        req = GenerationRequest(**{k: v for k, v in kwargs.items() if k in known})
        gen = generator.run(req, cancel=cancel)
        last = 0.0
        try:
            while True:
                p = next(gen)
                now = time.perf_counter()
                if now - last >= PROGRESS_INTERVAL_S or p.step >= p.total:
                    last = now
                    emit(("progress", job_id, p.stage, p.step, p.total, p.eta_s, p.message))
        except StopIteration as stop:
            stems = stop.value or []
        if cancel.is_set():
            emit(("cancelled", job_id))
            return
        emit(("done", job_id, [StemResult(s.audio, s.sample_rate, s.seed, s.take, s.provenance)
                               for s in stems]))
    except Cancelled:
        emit(("cancelled", job_id))
    except Exception as e:  # noqa: BLE001 - every failure becomes a one-line message
        emit(("error", job_id, error_message(e, "generation")))


def engine_main(requests, events, cancel) -> None:
    """The engine process's loop."""
    lower_priority()
    generator = None
    while True:
        msg = requests.get()
        kind = msg[0]
        if kind == "quit":
            break
        if kind == "load":
            _, path, device = msg
            try:
                from app.bridge import load_generator

                generator = load_generator(path, device)
                defaults = {k: generator.bundle.defaults[k] for k in MODEL_DEFAULT_KEYS
                            if k in generator.bundle.defaults}
                events.put(("ready", generator.bundle.name, device_label(generator.device),
                            str(generator.bundle.path), defaults,
                            generator.bundle.prior is not None))
            except Exception as e:  # noqa: BLE001
                generator = None
                events.put(("load_failed", error_message(e, "loading the model")))
        elif kind == "run":
            _, job_id, kwargs = msg
            if generator is None:
                events.put(("error", job_id, "no model is loaded"))
                continue
            run_job(generator, job_id, kwargs, cancel, events.put)
    events.put(("exit",))
