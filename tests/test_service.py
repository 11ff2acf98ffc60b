"""The engine process (`engine.service`): typed messages, strict requests, no Qt in the
engine process, and an engine that exits when the GUI process dies."""

import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine import service

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def engine_thread():
    """`service.serve` on a thread with plain queues: the loop without a process."""
    requests, events, cancel = queue.Queue(), queue.Queue(), threading.Event()
    t = threading.Thread(target=service.serve, args=(requests, events, cancel), daemon=True)
    t.start()
    yield requests, events
    requests.put(service.Quit())
    t.join(30)


def next_event(events, kind, timeout=120.0):
    """The next event of type `kind`, skipping progress."""
    deadline = time.monotonic() + timeout
    while True:
        ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(ev, kind) or not isinstance(ev, service.Progress):
            return ev


def test_an_unknown_request_field_fails_the_job_by_name(engine_thread, tiny_bundle):
    requests, events = engine_thread
    requests.put(service.Load(str(tiny_bundle), "cpu"))
    ready = next_event(events, service.Ready)
    assert isinstance(ready, service.Ready) and ready.device == "CPU"
    assert ready.text_prior is False and ready.defaults["steps"] >= 1
    # a misspelt field is an error that names it, not a generation without it
    requests.put(service.Run(1, {"promt": "bass", "duration": 1.0, "steps": 2, "bogus": 1}))
    failed = next_event(events, service.JobFailed)
    assert isinstance(failed, service.JobFailed) and failed.job_id == 1
    assert "promt" in failed.message and "bogus" in failed.message
    # the same request spelt right generates
    requests.put(service.Run(2, {"prompt": "bass", "duration": 1.0, "steps": 2, "seed": 5}))
    done = next_event(events, service.Done)
    assert isinstance(done, service.Done) and done.job_id == 2
    (stem,) = done.stems
    assert stem.seed == 5 and stem.audio.ndim == 2 and stem.audio.shape[-1] > 0


def test_an_arrangement_returns_one_stem_per_part_with_seeds_base_plus_i(engine_thread,
                                                                         tiny_bundle):
    requests, events = engine_thread
    requests.put(service.Load(str(tiny_bundle), "cpu"))
    assert isinstance(next_event(events, service.Ready), service.Ready)
    ref = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 48000)).astype(np.float32)
    parts = [("prompt", "drums"), ("reference", "keys.wav", ref), ("prompt", "bass")]
    requests.put(service.Arrange(4, {"duration": 1.0, "steps": 2, "seed": 11}, parts))
    progress = []
    while True:
        ev = events.get(timeout=120)
        if not isinstance(ev, service.Progress):
            break
        progress.append(ev)
    assert isinstance(ev, service.Done) and ev.job_id == 4
    assert [s.seed for s in ev.stems] == [11, 12, 13]
    assert [s.provenance["arrangement"] for s in ev.stems] == [
        {"part": 1, "of": 3, "kind": "prompt", "value": "drums"},
        {"part": 2, "of": 3, "kind": "reference", "value": "keys.wav"},
        {"part": 3, "of": 3, "kind": "prompt", "value": "bass"}]
    assert all(s.audio.ndim == 2 and s.audio.shape[-1] > 0 for s in ev.stems)
    assert {p.job_id for p in progress} == {4}
    assert progress[-1].message.startswith("part 3/3: ")
    # a bad part fails the whole job with one line, before any work
    requests.put(service.Arrange(5, {"duration": 1.0, "steps": 2}, [("chord", "C")]))
    failed = next_event(events, service.JobFailed)
    assert isinstance(failed, service.JobFailed) and failed.job_id == 5
    assert "prompt or a reference" in failed.message


def test_an_arrangement_message_refuses_malformed_parts():
    with pytest.raises(TypeError, match="parts"):
        service.Arrange(1, {}, "drums")
    with pytest.raises(TypeError, match=r"parts\[0\]"):
        service.Arrange(1, {}, [("prompt",)])
    with pytest.raises(TypeError, match="not plain data"):
        service.Arrange(1, {}, [("reference", "x.wav", object())])


def test_messages_carry_plain_data_only():
    ok = service.Run(3, {"context": np.zeros((2, 10), np.float32), "inpaint": (0.5, 1.0),
                         "labels": {"context": "a.wav"}, "prompt": None, "seed": np.int64(4)})
    assert ok.request["inpaint"] == (0.5, 1.0)
    with pytest.raises(TypeError, match="not plain data"):
        service.Run(3, {"context": object()})  # e.g. a deferred context mix left unrendered
    with pytest.raises(TypeError, match="Python objects"):
        service.Run(3, {"context": np.array([object()])})
    with pytest.raises(TypeError, match="not a string"):
        service.Run(3, {"labels": {1: "x"}})
    with pytest.raises(TypeError):  # a misspelt message field is refused too
        service.Load(path=None, devise="cpu")
    with pytest.raises(TypeError, match="not plain data"):
        service.StemResult(np.zeros((1, 4), np.float32), 48000, 0, 0, {"path": Path("x")})


def test_parent_alive_sees_the_parents_sentinel_and_a_new_parent():
    r, w = os.pipe()
    try:
        parent = SimpleNamespace(sentinel=r, pid=os.getppid())
        assert service.parent_alive(parent, 0.01)
        if os.name == "posix":  # handed to another parent: gone, even with the pipe open
            assert not service.parent_alive(SimpleNamespace(sentinel=r, pid=-1), 0.01)
        os.close(w)  # what the parent's death does to the pipe it holds
        w = None
        assert not service.parent_alive(parent, 0.01)
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_the_gui_side_does_not_import_torch():
    code = "import sys, app.bridge, app.window; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT),
                              "QT_QPA_PLATFORM": "offscreen"}, timeout=120, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_the_engine_process_never_imports_qt_or_the_app(qtbot, tiny_bundle):
    from app.bridge import EngineBridge
    from app.controller import Job

    bridge = EngineBridge(device="cpu")
    try:
        with qtbot.waitSignal(bridge.sig_model_ready, timeout=120_000):
            bridge.load_model(str(tiny_bundle))
        job = Job("generate", {"duration": 1.0, "steps": 2, "seed": 1}, "x", 0)
        with qtbot.waitSignal(bridge.sig_finished, timeout=120_000) as done:
            assert bridge.generate(job)
        assert done.args[0] is job and len(done.args[1]) == 1
        with qtbot.waitSignal(bridge.sig_report, timeout=30_000) as got:
            assert bridge.inspect()
        report = got.args[0]
        assert report.pid == bridge._proc.pid != os.getpid()
        assert "torch" in report.modules and "engine.generation.driver" in report.modules  # it worked
        assert not [m for m in report.modules
                    if m.split(".")[0] in ("PySide6", "shiboken6", "app")]
        # a request that is not plain data is refused on the GUI side, as a message
        bad = Job("generate", {"duration": 1.0, "context": object()}, "x", 0)
        with qtbot.waitSignal(bridge.sig_error, timeout=30_000) as err:
            assert bridge.generate(bad)
        assert "cannot send the request" in err.args[0] and not bridge.busy
    finally:
        bridge.shutdown()


# what the installed `riffwright` console script runs: spawn re-imports the parent's main
# script in the child, so whatever the launcher imports at the top lands in the engine too
CONSOLE_SCRIPT = textwrap.dedent("""
    import json, sys
    from app.launcher import main

    if __name__ == "__main__":
        import multiprocessing as mp
        from engine import service

        ctx = mp.get_context("spawn")
        requests, events, cancel = ctx.Queue(), ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=service.main, args=(requests, events, cancel), daemon=True)
        proc.start()
        requests.put(service.Load(sys.argv[1], "cpu"))
        requests.put(service.Run(1, {"duration": 1.0, "steps": 2}))
        requests.put(service.Inspect())
        seen = []
        while not seen or not isinstance(seen[-1], service.Report):
            seen.append(events.get(timeout=180))
        requests.put(service.Quit())
        proc.join(30)
        print(json.dumps({"events": [type(e).__name__ for e in seen
                                     if not isinstance(e, service.Progress)],
                          "modules": seen[-1].modules}))
""")


@pytest.mark.slow
def test_the_engine_under_the_console_script_stays_qt_free(tmp_path, tiny_bundle):
    script = tmp_path / "riffwright"
    script.write_text(CONSOLE_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tiny_bundle)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["events"] == ["Ready", "Done", "Report"]
    modules = report["modules"]
    assert "torch" in modules
    assert not [m for m in modules if m.split(".")[0] in ("PySide6", "shiboken6")]
    # only the launcher spawn re-imports as the main script, and it imports the stdlib only
    assert {m for m in modules if m.split(".")[0] == "app"} <= {"app", "app.launcher"}


# the throw-away GUI stand-in: starts the real engine process, sets a long generation going,
# prints the engine's pid once sampling has begun, then waits to be killed
PARENT = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    from engine import service

    ctx = mp.get_context("spawn")
    requests, events, cancel = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=service.main, args=(requests, events, cancel), daemon=True)
    proc.start()
    requests.put(service.Load(sys.argv[1], "cpu"))
    print(type(events.get(timeout=120)).__name__, flush=True)
    requests.put(service.Run(1, {"duration": 30.0, "steps": 200, "takes": 2}))
    while True:
        ev = events.get(timeout=120)
        if isinstance(ev, service.Progress) and ev.stage == "sample":
            break
    print(proc.pid, flush=True)
    time.sleep(600)
""")


def gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaps counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return not stat.parent.exists() and sys.platform.startswith("linux")


def read_line(proc, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no line from the parent within {timeout} s")
        return proc.stdout.readline().strip()
    finally:
        sel.close()


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="kill -9 and process checks are POSIX here")
def test_the_engine_exits_when_its_gui_process_is_killed(tiny_bundle):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tiny_bundle)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = None
    try:
        assert read_line(parent, 180) == "Ready"
        child = int(read_line(parent, 180))
        assert not gone(child)  # mid-generation
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        t0 = time.monotonic()
        while not gone(child) and time.monotonic() - t0 < 5.0:
            time.sleep(0.05)
        waited = time.monotonic() - t0
        assert gone(child), f"the engine process {child} outlived its parent by {waited:.1f} s"
        assert waited < 2.0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child is not None and not gone(child):
            os.kill(child, signal.SIGKILL)
