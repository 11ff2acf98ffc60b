"""The engine process: loads the model and runs generations away from the GUI process.

Qt-free, and it imports nothing from `app`: `main` is the target of the `multiprocessing`
(spawn) child that `app.bridge.EngineBridge` starts. Running torch in its own process means
the GUI never waits for the sampler's interpreter lock, so the window stays smooth even on
a 2-core machine.

Protocol: frozen dataclasses through two queues, one per direction. Only plain data crosses
(numbers, strings, None, numpy arrays, and tuples, lists, string-keyed dicts and the
dataclasses below built from those); a request that carries anything else is refused when it
is built, on the sending side, so a stray object (a whole session) is never pickled.

- requests (GUI -> engine): `Load`, `Run`, `Arrange`, `Inspect`, `Quit`
- events (engine -> GUI): `Ready`, `LoadFailed`, `Progress`, `Done`, `JobCancelled`,
  `JobFailed`, `Report`, `Exited`

`Run.request` holds `engine.generation.request.GenerationRequest`'s fields by name; the engine builds
the request strictly, so a field it does not know is an error (a `JobFailed` naming it),
never silently dropped. `Arrange` is the iterative arrangement of `engine.arrange` (one stem
per part, part i with seed + i), answered like a `Run`: progress, then one `Done` with every
part's stem. Cancel is a shared `multiprocessing.Event` the engine checks before
every step. The engine exits on its own within about a second when the GUI process dies
(`watch_parent`), so a crashed app never leaves a process holding the model and its memory.

Module-level imports are stdlib and numpy only: the GUI imports this module for the message
types, and must not load torch by doing so.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

PROGRESS_INTERVAL_S = 0.05  # progress events at most 20 per second (the GUI redraws each)
WATCH_INTERVAL_S = 0.25  # how often the engine looks for a dead GUI process
EXIT_PARENT_GONE = 3  # exit status when the engine quits because the GUI process died
# the bundle's own defaults the panel adopts when a model loads (guidance suits each model)
MODEL_DEFAULT_KEYS = ("cfg_context", "cfg_clap", "harmony", "rhythm", "steps")


# ---- plain data


def check_plain(value, where: str = "value") -> None:
    """Raise TypeError unless `value` is plain data that may cross the process boundary.

    Pickle would carry any object, and unpickling one in the other process imports its
    module: a session would drag the app into the engine, a torch tensor torch into the GUI.
    """
    if value is None or isinstance(value, (bool, int, float, str, np.number, np.bool_)):
        return
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: a numpy array of Python objects cannot cross to the engine")
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            check_plain(v, f"{where}[{k!r}]")
        return
    if dataclasses.is_dataclass(value) and type(value).__module__ == __name__:
        return  # this module's messages check themselves when they are built
    raise TypeError(f"{where}: {type(value).__name__} is not plain data (numbers, strings, "
                    "numpy arrays and containers of those)")


# ---- requests (GUI -> engine)


@dataclass(frozen=True)
class Load:
    """Load a bundle (None: the default one) on a device ("auto", "cpu", "cuda", "mps")."""

    path: str | None
    device: str = "auto"


@dataclass(frozen=True)
class Run:
    """Run one generation; `request` holds `GenerationRequest` fields by name."""

    job_id: int
    request: dict = field(default_factory=dict)

    def __post_init__(self):
        check_plain(self.request, "request")


@dataclass(frozen=True)
class Arrange:
    """Run an iterative arrangement: `request` is the base request (as for `Run`), `parts`
    one `(kind, value)` per part in order, kind "prompt" or "reference"; a reference part is
    `("reference", label, audio)` with its audio a numpy array at the request's rate."""

    job_id: int
    request: dict
    parts: list

    def __post_init__(self):
        check_plain(self.request, "request")
        if not isinstance(self.parts, (list, tuple)):
            raise TypeError("parts: a list of (kind, value) pairs")
        for i, part in enumerate(self.parts):
            if not isinstance(part, (list, tuple)) or len(part) not in (2, 3):
                raise TypeError(f"parts[{i}]: (kind, value) or (\"reference\", label, audio)")
        check_plain(self.parts, "parts")


@dataclass(frozen=True)
class Inspect:
    """Ask the engine what it has imported (answered with a `Report`)."""


@dataclass(frozen=True)
class Quit:
    """Finish: the engine answers `Exited` and its process ends."""


# ---- events (engine -> GUI)


@dataclass(frozen=True)
class Ready:
    """The model is loaded: its name, the device label ("CPU", "CUDA", "MPS"), its folder,
    the bundle's guidance defaults (`MODEL_DEFAULT_KEYS`), whether it has a text prior and
    whether it can steer towards the context's harmony (a harmony probe) and onsets (that and
    a rhythm probe)."""

    name: str
    device: str
    path: str
    defaults: dict
    text_prior: bool
    harmony: bool = False
    rhythm: bool = False


@dataclass(frozen=True)
class LoadFailed:
    message: str


@dataclass(frozen=True)
class Progress:
    """How far a job has come (throttled to `PROGRESS_INTERVAL_S`, the last step always)."""

    job_id: int
    stage: str
    step: int
    total: int
    eta_s: float | None = None
    message: str = ""


@dataclass(frozen=True)
class StemResult:
    """A generated stem as it crosses the process boundary (the fields of engine `Stem`,
    which the engine process makes in `engine.generation`)."""

    audio: np.ndarray  # (channels, T) float32
    sample_rate: int
    seed: int
    take: int
    provenance: dict

    def __post_init__(self):
        check_plain(self.provenance, "provenance")


@dataclass(frozen=True)
class Done:
    job_id: int
    stems: tuple[StemResult, ...]


@dataclass(frozen=True)
class JobCancelled:
    job_id: int


@dataclass(frozen=True)
class JobFailed:
    """A job failed; `message` is one line for the user, never a traceback."""

    job_id: int
    message: str


@dataclass(frozen=True)
class Report:
    """The engine process's id and the names of the modules it has imported."""

    pid: int
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Exited:
    """The engine's last event before its process ends (after `Quit`)."""


# ---- helpers


def device_label(device) -> str:
    kind = getattr(device, "type", str(device)).split(":")[0].lower()
    return {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}.get(kind, kind.upper())


def error_message(exc: BaseException, doing: str) -> str:
    """One line for the user: the engine's own message, or what failed and how."""
    from engine.errors import RiffwrightError

    if isinstance(exc, RiffwrightError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: try fewer takes, fewer seconds or the CPU"
    return f"{doing} failed: {exc.__class__.__name__}: {exc}"


def build_request(fields: dict):
    """`GenerationRequest(**fields)`, refusing fields it does not have (a RequestError
    naming them): a misspelt or renamed field must fail loudly, not generate something else."""
    from engine.errors import RequestError
    from engine.generation.request import GenerationRequest

    known = {f.name for f in dataclasses.fields(GenerationRequest)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise RequestError(f"the engine does not know the request field(s) {', '.join(unknown)}")
    return GenerationRequest(**fields)


def load_generator(path: str | None, device: str):
    """Load a bundle and wrap it in an `engine.generation.driver.Generator`."""
    from engine.bundles.bundle import find_bundle, load_bundle
    from engine.generation.driver import Generator, pick_device

    dev = pick_device(device)
    bundle = load_bundle(find_bundle(path), dev)
    return Generator(bundle, dev)


def ready_event(generator) -> Ready:
    b = generator.bundle
    defaults = {k: b.defaults[k] for k in MODEL_DEFAULT_KEYS if k in b.defaults}
    return Ready(b.name, device_label(generator.device), str(b.path), defaults,
                 b.prior is not None, b.steers["harmony"], b.steers["rhythm"])


def drive_job(job_id: int, start, cancel, emit) -> None:
    """Drive the generator `start()` returns (Progress events, then its stems), emitting
    progress (throttled) and then the result or the error. `start` runs inside the error
    handling, so a request that cannot be built fails the job with one line."""
    from engine.errors import Cancelled

    try:
        gen = start()
        last = 0.0
        try:
            while True:
                p = next(gen)
                now = time.perf_counter()
                if now - last >= PROGRESS_INTERVAL_S or p.step >= p.total:
                    last = now
                    emit(Progress(job_id, p.stage, p.step, p.total, p.eta_s, p.message))
        except StopIteration as stop:
            stems = stop.value or []
        if cancel.is_set():
            emit(JobCancelled(job_id))
            return
        emit(Done(job_id, tuple(StemResult(s.audio, s.sample_rate, s.seed, s.take, s.provenance)
                                for s in stems)))
    except Cancelled:
        emit(JobCancelled(job_id))
    except Exception as e:  # noqa: BLE001 - every failure becomes a one-line message
        emit(JobFailed(job_id, error_message(e, "generation")))


def run_job(generator, job_id: int, fields: dict, cancel, emit) -> None:
    """Run one request (a `Run`)."""
    drive_job(job_id, lambda: generator.run(build_request(fields), cancel=cancel), cancel, emit)


def build_parts(parts) -> list:
    """`engine.arrange.Part`s from an `Arrange`'s plain tuples."""
    from engine.arrange import Part

    return [Part(p[0], str(p[1]), p[2] if len(p) > 2 else None) for p in parts]


def arrange_job(generator, job_id: int, fields: dict, parts, cancel, emit) -> None:
    """Run an arrangement (an `Arrange`) through `engine.arrange.arrange`, the generator the
    CLI drives too: one stem per part, part i with seed + i."""
    from engine.arrange import arrange

    drive_job(job_id, lambda: arrange(generator, build_request(fields), build_parts(parts),
                                      cancel), cancel, emit)


# ---- the loop and the process


def serve(requests, events, cancel) -> None:
    """Answer requests until `Quit` (the loop itself: no process-wide settings, so tests can
    run it on a thread)."""
    generator = None
    while True:
        msg = requests.get()
        if isinstance(msg, Quit):
            break
        if isinstance(msg, Load):
            try:
                generator = load_generator(msg.path, msg.device)
                events.put(ready_event(generator))
            except Exception as e:  # noqa: BLE001
                generator = None
                events.put(LoadFailed(error_message(e, "loading the model")))
        elif isinstance(msg, Run):
            if generator is None:
                events.put(JobFailed(msg.job_id, "no model is loaded"))
            else:
                run_job(generator, msg.job_id, dict(msg.request), cancel, events.put)
        elif isinstance(msg, Arrange):
            if generator is None:
                events.put(JobFailed(msg.job_id, "no model is loaded"))
            else:
                arrange_job(generator, msg.job_id, dict(msg.request), msg.parts, cancel,
                            events.put)
        elif isinstance(msg, Inspect):
            events.put(Report(os.getpid(), tuple(sorted(sys.modules))))
        else:
            raise TypeError(f"not an engine request: {msg!r}")
    events.put(Exited())


def parent_alive(parent, wait_s: float) -> bool:
    """Wait up to `wait_s` for the parent process to die; False once it has.

    Two signs, either enough: the parent's sentinel becomes ready (on POSIX the pipe whose
    writing end only the parent holds reads end-of-file, on Windows the parent's process
    handle is signalled), or, on POSIX, this process has been handed to another parent.
    """
    if multiprocessing.connection.wait([parent.sentinel], timeout=wait_s):
        return False
    return os.name != "posix" or os.getppid() == parent.pid


def watch_parent(poll_s: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """Exit this process as soon as its parent (the GUI) dies, even mid-generation.

    Exiting at once rather than cancelling: nobody is left to receive a result, the engine
    writes no files, and the sampler may be inside a step that takes seconds. None when this
    is not a multiprocessing child.
    """
    parent = mp.parent_process()
    if parent is None:
        return None

    def watch():
        while parent_alive(parent, poll_s):
            pass
        os._exit(EXIT_PARENT_GONE)

    t = threading.Thread(target=watch, daemon=True, name="riffwright-parent-watch")
    t.start()
    return t


def configure_process(niceness: int = 10) -> None:
    """Process-wide settings for the engine: the GUI process wins the CPU when both want
    it, and on small machines torch leaves it a core."""
    try:
        os.nice(niceness)
    except (AttributeError, OSError):  # not POSIX, or not allowed: harmless
        pass
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # before torch is imported
    threads = engine_threads()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def engine_threads(cores: int | None = None) -> int | None:
    """Torch CPU threads for generating on a machine of `cores` cores (this one's by default):
    one fewer than the cores on up to 4 (the GUI, or the DAW, keeps one), else None (torch's
    own choice). On 2 cores one thread is also the faster: a 10 s stereo take in 0.31-0.34 of
    real time against 0.48-0.78 with two waiting threads (docs/benchmarks.md)."""
    cores = cores or os.cpu_count() or 2
    return max(1, cores - 1) if cores <= 4 else None


def main(requests, events, cancel) -> None:
    """The engine process's entry point (the spawn target)."""
    watch_parent()
    configure_process()
    serve(requests, events, cancel)
