"""App pieces on their own: the audio callback, waveform level of detail, tempo estimate,
generation jobs built from the session, the bars|beats axis."""

import tracemalloc

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from app.controller import DEFAULT_RECIPE, ActionError, SessionController
from engine.document.session import Region, Session, UndoStack, track_from_audio


def _session(seconds=4.0, sr=48000):
    s = Session(sr)
    t = np.arange(int(seconds * sr)) / sr
    s.insert_track(track_from_audio("a", np.stack([np.sin(2 * np.pi * 100 * t)] * 2) * 0.5))
    return s


def test_callback_copies_premixed_audio_and_loops(qtbot):
    from app.transport import Transport

    s = _session(1.0)
    tr = Transport(s, use_audio=False)
    tr.remix(wait=True)
    mix = tr.st.buf
    assert mix.shape == (48000, 2) and mix.flags["C_CONTIGUOUS"]
    out = np.zeros((1024, 2), np.float32)
    tr.st.playing = True
    tr.st.pos = 100
    tr._callback(out, 1024, None, None)
    np.testing.assert_array_equal(out, mix[100:1124])
    assert tr.st.pos == 1124
    # loop: wraps from the loop end to the loop start inside one block
    tr.st.loop = (1000, 1500)
    tr.st.pos = 1400
    tr._callback(out, 1024, None, None)
    np.testing.assert_array_equal(out[:100], mix[1400:1500])
    np.testing.assert_array_equal(out[100:600], mix[1000:1500])
    # the callback allocates no sample memory (only tiny view objects)
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(50):
        tr._callback(out, 1024, None, None)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(st.size_diff for st in snap1.compare_to(snap0, "filename"))
    assert grown < 4096
    # end of the buffer: silence and stop
    tr.st.loop = None
    tr.st.pos = 48000 - 10
    tr._callback(out, 1024, None, None)
    assert not tr.st.playing and np.all(out[10:] == 0)
    tr.close()


def test_live_gain_remix(qtbot):
    from app.transport import Transport

    s = _session(0.5)
    tr = Transport(s, use_audio=False)
    tr.remix(wait=True)
    before = tr.st.buf.copy()
    s.tracks[0].gain_db = -6.0
    tr.remix(wait=True)
    np.testing.assert_allclose(tr.st.buf, before * 10 ** (-6 / 20), atol=1e-6)
    s.tracks[0].mute = True
    tr.remix(wait=True)
    assert not tr.st.buf.any()


def test_lane_draws_a_few_points_per_pixel(qtbot):
    from app.lanes import LaneView

    s = Session(48000)
    n = 48000 * 600  # ten minutes
    s.insert_track(track_from_audio("long", np.random.default_rng(0).standard_normal((2, n))
                                    .astype(np.float32) * 0.1))
    view = LaneView(s)
    qtbot.addWidget(view)
    view.resize(1200, 400)
    view.show()
    plot = next(iter(view.rows.values())).plot
    for x0, x1 in ((0, 600), (100, 110), (300, 300.05)):
        view.set_visible_range(x0, x1)
        plot.refresh()
        x, y = plot.curve.getData()
        width = plot.getViewBox().width()
        assert 0 < len(x) <= 8 * width + 16, (x0, x1, len(x), width)
        assert x.min() <= x0 + (x1 - x0) * 0.05 and x.max() >= x1 - (x1 - x0) * 0.05
    assert view.redraw_all() < 0.05


def test_takes_land_in_rows_reserved_during_the_generation(qtbot):
    """prepare_rows reserves a visible "generating…" row per take below the last lane; a
    track that lands binds the first one in place (no re-layout), shows its own name and
    draws its own waveform; release_rows drops what is left."""
    from app.lanes import LaneView

    s = _session(2.0)
    view = LaneView(s)
    qtbot.addWidget(view)
    view.resize(1000, 400)
    view.show()
    view.prepare_rows(2)
    qtbot.waitUntil(lambda: len(view._spares) == 2, timeout=3000)
    spare = view._spares[0]
    assert spare.isVisible() and "generating" in spare.header.name.full_text
    y_before = spare.geometry().y()
    take = track_from_audio("bass take A", np.full((1, 48000), 0.5, np.float32),
                            role="generated")
    s.insert_track(take)
    row = view.rows[take.id]
    assert row is spare and row.isVisible() and len(view._spares) == 1
    QApplication.processEvents()
    assert row.geometry().y() == y_before  # it did not move: nothing was re-laid out
    assert row.header.name.full_text == "bass take A" and row.plot.track_id == take.id
    x, y = row.plot.curve.getData()
    assert len(x) and np.isclose(np.abs(y).max(), 0.5)
    view.release_rows()
    assert not view._spares and len(view.rows) == 2


def test_bars_axis_labels_bars(qtbot):
    from app.lanes import BarsAxis

    s = Session()
    s.tempo = 120.0
    ax = BarsAxis(lambda: s, orientation="bottom")
    levels = ax.tickValues(0, 16, 800)
    assert levels[0][1][:3] == [0.0, 2.0, 4.0]
    assert ax.tickStrings([0.0, 2.0, 3.0], 1, 2) == ["1", "2", ""]
    s.bar_start = 0.5  # bar 1 half a second in: the lines move with it, the bar before is 0
    levels = ax.tickValues(0, 16, 800)
    assert levels[0][1][:3] == [0.5, 2.5, 4.5]
    assert levels[1][1][:3] == [0.0, 0.5, 1.0]
    assert ax.tickStrings([0.5, 2.5, 3.0], 1, 2) == ["1", "2", ""]
    s.tempo = None
    assert ax.tickValues(0, 16, 800) == []


def test_jobs_follow_loop_region_and_lane_offsets():
    s = _session(8.0)
    ctl = SessionController(s, UndoStack(s))
    recipe = DEFAULT_RECIPE.replace(prompt="bass", takes=3, loop_n=2)
    job = ctl.build_job("generate", recipe)
    assert job.resolved_request()["context"].shape == (2, 8 * 48000) and job.offset == 0
    assert job.request["loop"] == (2, 0.5) and job.request["takes"] == 3
    # the text prior is the model's to apply unless the musician turned it off
    assert "text_prior" not in job.request
    assert ctl.build_job("generate", recipe.replace(text_prior=False)).request[
        "text_prior"] is False
    ctl.set_loop((2.0, 6.0))
    job = ctl.build_job("generate", recipe)
    assert job.request["duration"] == 4.0 and job.offset == 96000
    np.testing.assert_allclose(job.resolved_request()["context"], s.render(start=2.0, end=6.0))
    # a lane placed at 2 s: inpaint times are relative to its start
    lane = track_from_audio("gen", np.zeros((1, 48000 * 4), np.float32), role="generated",
                            offset=96000)
    s.insert_track(lane)
    with pytest.raises(ActionError):
        ctl.build_job("inpaint", recipe, lane.id)
    s.set_regions(lane.id, [Region(3.0, 4.0)])
    job = ctl.build_job("inpaint", recipe, lane.id)
    assert job.request["inpaint"] == (1.0, 2.0) and job.offset == 96000
    assert job.resolved_request()["context"].shape[1] == 4 * 48000  # context under the lane only
    with pytest.raises(ActionError):
        ctl.build_job("vary", recipe, None)
    # empty prompt -> no text condition
    assert ctl.build_job("generate", recipe.replace(prompt="  ")).request["prompt"] is None


def test_qt_bindings_keep_refcounts_of_none_and_bools(qtbot):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None/True on every signal emit
    and repaint, which kills the app after a few thousand redraws ('deallocating None')."""
    import sys

    from app.lanes import LaneView

    s = _session(5.0)
    view = LaneView(s)
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.show()

    def counts():
        return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)

    for _ in range(5):
        view.redraw_all()
        view.repaint()
    before = counts()
    for i in range(200):
        view.set_visible_range(0.1 * (i % 7), 3 + 0.1 * (i % 5))
        view.redraw_all()
        view.repaint()
    after = counts()
    assert all(abs(a - b) < 100 for a, b in zip(before, after, strict=True)), (before, after)


def test_transport_with_an_output_device(qtbot, monkeypatch):
    """The device path, with a stand-in for sounddevice that pulls blocks like PortAudio."""
    import sys
    import types

    from app.transport import Transport

    opened = []

    class FakeStream:
        def __init__(self, **kw):
            self.kw = kw
            opened.append(self)
            self.pulled = []

        def start(self):
            out = np.zeros((kw_block := self.kw["blocksize"], 2), np.float32)
            for _ in range(3):
                self.kw["callback"](out, kw_block, None, None)
                self.pulled.append(out.copy())

        def stop(self):
            pass

        def close(self):
            pass

    fake = types.SimpleNamespace(
        query_devices=lambda: [{"name": "Speakers", "max_output_channels": 2},
                               {"name": "Mic", "max_output_channels": 0}],
        OutputStream=FakeStream)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    s = _session(1.0)
    tr = Transport(s)
    assert tr.silent_reason == "" and tr.output_devices() == [(0, "Speakers")]
    tr.set_device(0)
    tr.seek(0.5)
    tr.play()
    st = opened[-1]
    assert st.kw["device"] == 0 and st.kw["samplerate"] == 48000 and st.kw["channels"] == 2
    n = st.kw["blocksize"]
    np.testing.assert_array_equal(st.pulled[0], tr.st.buf[24000:24000 + n])
    np.testing.assert_array_equal(st.pulled[2], tr.st.buf[24000 + 2 * n:24000 + 3 * n])
    assert tr.position() == pytest.approx((24000 + 3 * n) / 48000)
    tr.stop()
    tr.close()


def test_transport_without_portaudio(qtbot, monkeypatch):
    import builtins

    from app.transport import Transport

    real_import = builtins.__import__

    def no_portaudio(name, *a, **kw):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    tr = Transport(_session(0.5))
    assert "PortAudio" in tr.silent_reason
    tr.play()  # still plays (silently) on the wall clock
    assert tr.is_playing()
    tr.stop()


def test_launcher_opens_the_app_for_an_audio_file(monkeypatch, tmp_path):
    """`riffwright song.wav` opens the window with the file, as a musician expects; a
    subcommand still goes to the command line."""
    import app.launcher as launcher
    import app.main

    seen = {}
    monkeypatch.setattr(app.main, "run_app", lambda argv: seen.setdefault("app", argv) and 0)
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    launcher.main([str(song)])
    assert seen["app"] == [str(song)]
    import engine.cli

    monkeypatch.setattr(engine.cli, "main", lambda argv: seen.setdefault("cli", argv) and 0)
    launcher.main(["models", "list"])
    assert seen["cli"] == ["models", "list"]


def test_the_gui_bench_runs_its_steps_and_reports(qtbot, tiny_bundle):
    """`riffwright bench --gui` in miniature: the window, lanes, a baseline and a generation
    while browsing, with every number reported."""
    import tempfile
    from pathlib import Path

    from app.bench import run_gui_bench

    left = lambda: set(Path(tempfile.gettempdir()).glob("riffwright-bench-*"))  # noqa: E731
    before = left()
    r = run_gui_bench(str(tiny_bundle), minutes=1.1, lanes=2, steps=2, seconds=1.0)
    assert left() == before  # its settings and autosaves (tens of MB) are removed
    assert r["generation"] == "finished", r
    assert r["lanes"] == 2 and r["redraws"] >= 1 and r["redraw_ms_median"] is not None
    for key in ("startup_window_s", "import_s", "generation_s", "max_stall_ms",
                "paint_ms_max", "idle_redraw_ms"):
        assert isinstance(r[key], float) and r[key] >= 0, key
    assert isinstance(r["no_generation_p99_stall_ms"], float)  # a timer may fire early: < 0


def test_only_the_controller_writes_the_session():
    """Views never change the model: no assignment to a session's attributes and no
    `set_attr` call anywhere in app/ but the controller (undo commands) and the session-files
    workflow (a saved session's title; a recovered session's path before it is bound)."""
    import ast
    from pathlib import Path

    allowed = {"controller.py": None, "session_files.py": {"title", "path", "dirty"}}
    found = []
    for f in sorted((Path(__file__).parents[1] / "app").glob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                base = t.value if isinstance(t, ast.Subscript) else t
                if isinstance(base, ast.Attribute) and "session" in ast.unparse(base.value) \
                        and not ast.unparse(base.value).endswith("ctl"):
                    found.append((f.name, base.attr))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("set_attr", "set_regions", "insert_track") and \
                    "session" in ast.unparse(node.func.value):
                found.append((f.name, node.func.attr))
    bad = [(name, attr) for name, attr in found
           if name not in allowed or (allowed[name] is not None and attr not in allowed[name])]
    assert bad == []


def test_jobs_carry_the_session_tempo_as_a_beat_grid_from_its_bar_lines():
    from app.controller import command_line, recipe_lines

    s = _session(8.0)
    ctl = SessionController(s, UndoStack(s))
    recipe = DEFAULT_RECIPE.replace(prompt="drums")
    assert ctl.build_job("generate", recipe).request["beat_grid"] is None  # no tempo set
    s.tempo, s.meter = 96.0, (6, 8)
    assert ctl.build_job("generate", recipe).request["beat_grid"] == (96.0, 3.0, 0.0)
    # a loop region (snapped to the bars): the request's audio starts there, the bars at the
    # session's 0
    ctl.set_loop((2.5, 6.0))
    assert s.loop[0] > 0
    assert ctl.build_job("generate", recipe).request["beat_grid"] == (96.0, 3.0, -s.loop[0])
    lane = track_from_audio("gen", np.zeros((1, 48000 * 4), np.float32), role="generated",
                            offset=48000)
    s.insert_track(lane)
    assert ctl.build_job("vary", recipe, lane.id).request["beat_grid"] == (96.0, 3.0, -1.0)
    # the take's command line gives the model the same grid (a bar of three quarters)
    prov = {"parameters": {"mode": "accompaniment"}, "seed": 4,
            "beat_grid": {"bpm": 96.0, "bar_beats": 3.0, "downbeat": -2.5, "used": True}}
    assert "--tempo 96 --meter 3/4 --downbeat -2.5 --seed 4" in command_line(prov)
    # bar 1 later than the session's zero moves every grid by as much (one undo step)
    ctl.set_bar_start(0.4)
    assert s.bar_start == 0.4
    assert ctl.build_job("vary", recipe, lane.id).request["beat_grid"] == (96.0, 3.0, -0.6)
    ctl.stack.undo()
    assert s.bar_start == 0.0
    # bars of 1.875 s: a bar line 2.5 s before the take's start puts its first one 1.25 s in
    assert ("Beat grid: 96 BPM, bars of 3 beats, the first bar line 1.25 s in (followed)"
            in recipe_lines(prov))
    prov["beat_grid"]["downbeat"] = -3.75  # two bars before: the take starts on a bar line
    assert "Beat grid: 96 BPM, bars of 3 beats (followed)" in recipe_lines(prov)


def test_bar_one_moves_the_bar_regions_and_the_snap():
    s = _session(8.0)
    ctl = SessionController(s, UndoStack(s))
    s.tempo, s.meter = 120.0, (4, 4)  # bars of 2 s
    ctl.set_bar_start(0.75)
    tid = s.tracks[0].id
    r = ctl.add_bar_region(tid, 3.0)  # inside bar 2 (2.75-4.75)
    assert (r.start, r.end) == (2.75, 4.75)
    r = ctl.add_bar_region(tid, 0.5)  # the pick-up bar before bar 1 starts before the audio
    assert (r.start, r.end) == (0.0, 0.75)
    ctl.set_loop((3.1, 3.2))  # a loop snaps to bar lines, at least one bar long
    assert s.loop == (2.75, 4.75)
    # a region dragged before the session's zero keeps a bar: the nearest bar line is bar 1's
    ctl.move_region(tid, r.id, -1.2, 0.6)
    assert [(x.start, x.end) for x in s.track(tid).regions if x.id == r.id] == [(0.75, 2.75)]
    ctl.move_region(tid, r.id, -10.0, -6.0)
    assert [(x.start, x.end) for x in s.track(tid).regions if x.id == r.id] == [(0.75, 2.75)]
    with pytest.raises(ActionError, match="seconds"):
        ctl.set_bar_start(float("nan"))
    ctl.set_bar_start(-2.0)  # before the session's zero: the zero
    assert s.bar_start == 0.0

