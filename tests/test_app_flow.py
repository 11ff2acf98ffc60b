"""The whole musician's flow, offscreen, on a tiny untrained bundle: drop a file, type a
prompt, draw a region, generate, cancel, generate again, undo/redo, export, save, reopen."""

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from app.actions import Action
from app.bench import StallMonitor
from app.main import build_window

XSD = Path("/work/shared/data/dawproject/Project.xsd")


@pytest.fixture
def win(qtbot, tmp_path, tiny_bundle):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = build_window(settings, model=str(tiny_bundle), autosave_root=tmp_path / "autosave",
                     export_dir=tmp_path / "exports", modal_messages=False)
    qtbot.addWidget(w)
    w.resize(1300, 800)
    w.show()
    qtbot.waitUntil(lambda: w.bridge.generator is not None, timeout=180_000)
    yield w
    w.session.dirty = False


@pytest.fixture
def win_nomodel(qtbot, tmp_path):
    """The window without a model (for tests that never generate)."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = build_window(settings, autosave_root=tmp_path / "autosave",
                     export_dir=tmp_path / "exports", modal_messages=False, load_model=False)
    qtbot.addWidget(w)
    w.resize(1300, 800)
    w.show()
    yield w
    w.session.dirty = False


def drop(w, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(400, 300)
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(w, enter)
    assert enter.isAccepted()
    ev = QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(w, ev)


def drag_on_plot(qtbot, plot, x0_s, x1_s):
    """A real mouse drag across a lane's waveform, from x0_s to x1_s seconds."""
    vb = plot.getViewBox()

    def to_px(sec):
        scene = vb.mapViewToScene(QPointF(sec, 0.0))
        return plot.mapFromScene(scene)

    a, b = to_px(x0_s), to_px(x1_s)
    vp = plot.viewport()
    qtbot.mousePress(vp, Qt.LeftButton, pos=a)
    for k in range(1, 9):
        qtbot.mouseMove(vp, QPoint(a.x() + (b.x() - a.x()) * k // 8, a.y()))
    qtbot.mouseRelease(vp, Qt.LeftButton, pos=b)


def generate(qtbot, w, action="generate", timeout=60_000):
    with qtbot.waitSignal(w.sig_generation_done, timeout=timeout) as blocker:
        assert w.run_action(action), w.last_message
    return blocker.args[0]


def test_full_flow(qtbot, win, clip_wav, tmp_path):
    w = win
    s = w.session
    # the device in use is always visible
    assert w.panel.device.text() == "CPU"
    # without an output device the app still runs and says why it is silent
    assert w.transport.silent_reason and "silent" in w.silent.text()

    # unsupported file: a message, nothing changes
    bad = tmp_path / "notes.m4a"
    bad.write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    drop(w, [bad])
    qtbot.waitUntil(lambda: "unsupported" in w.last_message or "M4A" in w.last_message
                    or "m4a" in w.last_message)
    assert s.tracks == []

    # drop a 44.1 kHz file: a new context lane, resampled to 48 kHz
    drop(w, [clip_wav])
    qtbot.waitUntil(lambda: len(w.session.tracks) == 1)
    s = w.session
    ctx = s.tracks[0]
    assert ctx.role == "context" and ctx.in_context
    assert abs(ctx.frames - 4 * 48000) <= 2
    assert ctx.id in w.lanes.rows
    assert s.tempo is not None  # estimated from the context
    w.ctl.set_tempo(120.0)  # the musician corrects it

    # type a prompt (goes into the session recipe, undoable)
    w.panel.prompt.setFocus()
    qtbot.keyClicks(w.panel.prompt, "walking bass")
    assert s.recipe.prompt == "walking bass"
    w.panel.steps.setValue(3)
    w.panel.takes.setValue(2)
    w.panel.stereo_width.set_value(0.0)
    assert s.recipe.steps == 3 and s.recipe.takes == 2

    # draw an inpaint region with the mouse; it snaps to bars (120 BPM 4/4: 2 s bars)
    w.lanes.fit()
    QApplication.processEvents()
    drag_on_plot(qtbot, w.lanes.rows[ctx.id].plot, 1.8, 3.9)
    qtbot.waitUntil(lambda: len(ctx.regions) == 1)
    r = ctx.regions[0]
    assert (r.start, r.end) == (2.0, 4.0)
    assert r.id in w.lanes.rows[ctx.id].plot.regions

    # generate: two takes grouped, first active; the GUI keeps running meanwhile
    mon = StallMonitor()
    mon.start()
    assert generate(qtbot, w) == "finished"
    max_stall = mon.stop()
    takes = [t for t in s.tracks if t.role == "generated"]
    assert len(takes) == 2
    assert takes[0].take_group == takes[1].take_group
    assert s.take_active(takes[0]) and not s.take_active(takes[1])
    assert takes[0].provenance["seed"] != takes[1].provenance["seed"]
    assert takes[0].provenance["app"]["recipe"]["prompt"] == "walking bass"
    assert takes[0].frames == ctx.frames
    assert max_stall < 1000, f"GUI stalled {max_stall:.0f} ms"

    # A/B switch
    w.ctl.activate_take(takes[1].id)
    assert s.take_active(takes[1]) and not s.take_active(takes[0])

    # cancel returns quickly and adds nothing
    n = len(s.tracks)
    w.panel.steps.setValue(200)
    progressed = []
    w.bridge.sig_progress.connect(lambda p: progressed.append(p.stage))
    with qtbot.waitSignal(w.sig_generation_done, timeout=30_000) as blocker:
        assert w.run_action("generate")
        qtbot.waitUntil(lambda: "sample" in progressed, timeout=30_000)
        t0 = time.perf_counter()
        w.cancel_generation()
    assert blocker.args == ["cancelled"]
    assert time.perf_counter() - t0 < 3.0
    assert len(s.tracks) == n
    assert not w.job_status.progress.isVisible() and w.panel.buttons["generate"].isEnabled()

    # generate again
    w.panel.steps.setValue(3)
    assert generate(qtbot, w) == "finished"
    assert len([t for t in s.tracks if t.role == "generated"]) == 4

    # regenerate exactly from provenance: same seed and recipe -> the same audio
    first = takes[0]
    w.lanes.select(first.id)
    assert generate(qtbot, w, "regenerate") == "finished"
    again = s.tracks[-1]
    assert again.provenance["seed"] == first.provenance["seed"]
    np.testing.assert_allclose(again.audio, first.audio, atol=1e-5)

    # inpaint the region of the context lane: outside the region the audio is untouched
    w.lanes.select(ctx.id)
    w.panel.takes.setValue(1)
    assert generate(qtbot, w, "inpaint") == "finished"
    inp = s.tracks[-1]
    assert inp.provenance["app"]["action"] == "inpaint"
    np.testing.assert_array_equal(inp.audio[:, : int(1.9 * 48000)],
                                  ctx.audio[:, : int(1.9 * 48000)])

    # undo and redo
    n = len(s.tracks)
    w.edits.undo()
    assert len(s.tracks) == n - 1
    w.edits.redo()
    assert len(s.tracks) == n and s.tracks[-1] is inp
    w.edits.undo()  # the inpaint
    w.edits.undo()  # the takes setting changed before it (panel edits are undoable too)
    assert s.recipe.takes == 2 and w.panel.takes.value() == 2
    w.edits.undo()  # the regenerate
    assert len(s.tracks) == n - 2
    for _ in range(3):
        w.edits.redo()
    assert len(s.tracks) == n and w.panel.takes.value() == 1

    # export stems + mix: 24-bit, session rate, equal length, aligned
    files = w.exports.export_stems_to(tmp_path / "export")
    assert len(files) == len(s.tracks) + 1
    infos = [sf.info(f) for f in files]
    assert {i.frames for i in infos} == {s.frames}
    assert {i.samplerate for i in infos} == {48000}
    assert {i.subtype for i in infos} == {"PCM_24"}
    assert all("120bpm" in f.name for f in files)
    exported_ctx, _ = sf.read(files[0], always_2d=True, dtype="float32")
    np.testing.assert_allclose(exported_ctx[:, 0], ctx.audio[0], atol=2e-7 * 50)

    # DAWproject
    out = w.exports.export_dawproject_to(tmp_path / "song.dawproject")
    with zipfile.ZipFile(out) as z:
        xml = z.read("project.xml").decode()
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(str(XSD)).validate(xml)

    # drag-out: the file exists (in the export folder) before the drag starts
    mime = w.lanes.rows[ctx.id].header.drag_mime()
    p = Path(mime.urls()[0].toLocalFile())
    assert p.exists() and p.parent == tmp_path / "exports"

    # save, new, reopen
    folder = tmp_path / "My song"
    assert w.save_to(folder)
    assert not s.dirty and "●" not in w.windowTitle()
    ids = [t.id for t in s.tracks]
    w.act[Action.NEW].trigger()  # File › New (nothing asked: no modal messages here)
    assert w.session.tracks == [] and not w.lanes.rows
    assert w.open_path(folder)
    s2 = w.session
    assert [t.id for t in s2.tracks] == ids
    assert s2.tempo == 120.0 and s2.track(ctx.id).regions[0].end == 4.0
    assert s2.recipe.prompt == "walking bass"
    assert s2.track(inp.id).provenance["app"]["action"] == "inpaint"
    np.testing.assert_array_equal(s2.track(ids[1]).audio, s.track(ids[1]).audio)
    assert len(w.lanes.rows) == len(ids)
    assert w.files.recent()[0] == str(folder)


def test_undo_merges_slider_drags_and_edits(qtbot, win_nomodel, clip_wav):
    w = win_nomodel
    assert w.import_paths([clip_wav]) == 1
    t = w.session.tracks[0]
    header = w.lanes.rows[t.id].header
    n = len(w.stack)
    header.gain.setSliderDown(True)
    for v in (-10, -40, -60):
        header.gain.setValue(v)
    header.gain.setSliderDown(False)
    header.gain.sliderReleased.emit()
    assert t.gain_db == pytest.approx(-6.0)
    assert len(w.stack) == n + 1  # one step for the whole drag
    qtbot.mouseClick(header.mute, Qt.LeftButton)
    assert t.mute and not w.session.audible(t)
    w.edits.undo()
    assert not t.mute
    w.edits.undo()
    assert t.gain_db == 0.0
    assert header.gain.value() == 0
    w.edits.redo()
    assert t.gain_db == pytest.approx(-6.0)
    # loop region on the ruler, snapped to bars when a tempo is set
    w.ctl.set_tempo(120)
    w.lanes.sig_loop_changed.emit((0.7, 3.2))
    assert w.session.loop == (0.0, 4.0)
    assert w.lanes.ruler_loop.isVisible()
    w.edits.undo()
    assert w.session.loop is None
    # transport runs without audio output and the playhead moves
    w.transport.play()
    qtbot.wait(150)
    assert w.transport.position() > 0.0
    w.transport.stop()
    assert w.transport.position() == 0.0


def test_autosave_and_recovery(qtbot, win_nomodel, clip_wav, tmp_path):
    w = win_nomodel
    w.import_paths([clip_wav])
    folder = w.files.autosave_now(wait=True)
    assert (folder / "session.json").exists()
    # simulate a crash: a fresh window finds the autosave and recovers it
    settings = QSettings(str(tmp_path / "settings2.ini"), QSettings.IniFormat)
    w2 = build_window(settings, autosave_root=tmp_path / "autosave",
                      export_dir=tmp_path / "exports", modal_messages=False, load_model=False)
    qtbot.addWidget(w2)
    assert w2.offer_recovery(ask=False)
    assert len(w2.session.tracks) == 1 and w2.session.dirty
    w2.session.dirty = False


def test_autosave_failure_is_shown_and_retried(qtbot, win_nomodel, clip_wav, monkeypatch):
    import errno

    import engine.document.session as session_mod

    w = win_nomodel
    w.import_paths([clip_wav])
    real = session_mod.atomic_write_text

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session_mod, "atomic_write_text", full)
    w.files.autosave_now(wait=True)
    assert "disk is full" in w.files.autosave_error
    monkeypatch.setattr(session_mod, "atomic_write_text", real)
    folder = w.files.autosave_now(wait=True)  # the next tick reports it, then tries again
    assert "autosave failed" in w.status_text.text()
    assert (folder / "session.json").exists() and w.files.autosave_error == ""


def test_layout_restored(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat)
    w = build_window(settings, autosave_root=tmp_path / "a", export_dir=tmp_path / "e",
                     modal_messages=False, load_model=False)
    qtbot.addWidget(w)
    w.show()
    w.resize(700, 500)  # inside the offscreen screen (800x600 by default)
    size = (w.width(), w.height())
    w.dock.hide()
    w.close()
    w2 = build_window(settings, autosave_root=tmp_path / "a", export_dir=tmp_path / "e",
                      modal_messages=False, load_model=False)
    qtbot.addWidget(w2)
    w2.show()
    assert (w2.width(), w2.height()) == size
    assert w2.dock.isHidden()


def test_engine_errors_become_messages(qtbot, win, clip_wav):
    from app.controller import Job

    w = win
    # an invalid request: the engine's one-line message, no traceback
    with qtbot.waitSignal(w.sig_generation_done, timeout=30_000) as blocker:
        assert w.gen.start(Job("generate", {"steps": 0, "prompt": "x"}, "bad", 0, ))
    assert blocker.args == ["error"]
    assert "steps must be between" in w.last_message and "Traceback" not in w.last_message
    # the engine process dies mid-generation: the app says so and keeps running
    w.import_paths([clip_wav])
    w.panel.steps.setValue(200)
    with qtbot.waitSignal(w.sig_generation_done, timeout=30_000) as blocker:
        assert w.run_action("generate")
        w.bridge._proc.kill()
    assert blocker.args == ["error"]
    assert "engine process stopped" in w.last_message
    assert w.panel.buttons["generate"].isEnabled()
    # loading again starts a fresh engine
    w.bridge.load_model(str(w.bridge.model_path))
    qtbot.waitUntil(lambda: w.bridge.generator is not None, timeout=180_000)


def test_gain_reset_and_prompt_typing_steps(qtbot, win_nomodel, clip_wav):
    w = win_nomodel
    w.import_paths([clip_wav])
    t = w.session.tracks[0]
    header = w.lanes.rows[t.id].header
    w.ctl.set_track_attr(t.id, "gain_db", -9.0)
    qtbot.mouseDClick(header.gain_label, Qt.LeftButton)
    assert t.gain_db == 0.0
    # typing is one undo step until the prompt box loses focus
    n = len(w.stack)
    w.panel.prompt.setFocus()
    qtbot.keyClicks(w.panel.prompt, "bass")
    w.panel.prompt.sig_focus_out.emit()  # what leaving the box sends
    w.panel.prompt.setFocus()
    qtbot.keyClicks(w.panel.prompt, " line")
    assert w.session.recipe.prompt == "bass line"
    assert len(w.stack) == n + 2
    w.edits.undo()
    assert w.session.recipe.prompt == "bass" and w.panel.prompt.toPlainText() == "bass"
    # Space plays and pauses even right after clicking a lane button
    qtbot.mouseClick(header.mute, Qt.LeftButton)
    assert not header.mute.hasFocus()


def test_space_plays_and_ruler_click_seeks(qtbot, win_nomodel, clip_wav):
    w = win_nomodel
    w.import_paths([clip_wav])
    w.activateWindow()
    qtbot.waitUntil(lambda: w.transport.st.buf.shape[0] > 0)
    qtbot.keyClick(w.lanes, Qt.Key_Space)
    assert w.transport.is_playing()
    qtbot.keyClick(w.lanes, Qt.Key_Space)
    assert not w.transport.is_playing()
    # click on the ruler at about 2 s: the playhead moves there
    w.lanes.set_visible_range(0.0, 4.0)
    QApplication.processEvents()
    vb = w.lanes.ruler.getViewBox()
    pt = w.lanes.ruler.mapFromScene(vb.mapViewToScene(QPointF(2.0, 0.5)))
    qtbot.mouseClick(w.lanes.ruler.viewport(), Qt.LeftButton, pos=pt)
    assert abs(w.transport.position() - 2.0) < 0.05
    assert abs(w.lanes.ruler_head.value() - w.transport.position()) < 1e-6


def test_the_loaded_model_brings_its_guidance(qtbot, win):
    # the engine reports the bundle's defaults with the model
    assert win.bridge.generator.defaults["steps"] >= 1
    assert {"cfg_context", "cfg_clap"} <= set(win.bridge.generator.defaults)
    # the tiny test bundle has no text prior: its switch is greyed out, and says why
    assert win.bridge.generator.text_prior is False
    assert not win.panel.text_prior.isEnabled()
    assert "no text prior" in win.panel.text_prior.toolTip()
    win.panel.set_text_prior_available(True)
    assert win.panel.text_prior.isEnabled()
    win.panel.text_prior.setChecked(False)
    assert win.session.recipe.text_prior is False and not win.panel.recipe().text_prior
    # nor guidance probes: their sliders are greyed out, and a session's settings not sent
    assert win.bridge.generator.harmony is False and not win.ctl.harmony_available
    assert win.bridge.generator.rhythm is False and not win.ctl.rhythm_available
    assert not win.panel.harmony.isEnabled() and "no harmony probe" in win.panel.harmony.toolTip()
    assert not win.panel.rhythm.isEnabled() and "no rhythm probe" in win.panel.rhythm.toolTip()
    win.ctl.set_recipe_value("harmony", 3.0)
    win.ctl.set_recipe_value("rhythm", 2.0)
    req = win.ctl.build_job("generate", win.ctl.recipe).request
    assert req["harmony"] == 0.0 and req["rhythm"] == 0.0
    win.panel.set_guidance_available(True, True)
    win.ctl.harmony_available = win.ctl.rhythm_available = True
    assert win.panel.harmony.isEnabled() and win.panel.rhythm.isEnabled()
    req = win.ctl.build_job("generate", win.ctl.recipe).request
    assert req["harmony"] == 3.0 and req["rhythm"] == 2.0


def test_recipes_adopt_a_model_default_unless_set_by_hand(qtbot, win_nomodel):
    w = win_nomodel
    w.panel.cfg_clap.set_value(2.0)
    w.ctl.set_recipe_value("cfg_clap", 2.0)  # the musician's own value
    w.ctl.adopt_model_defaults({"cfg_context": 4.0, "cfg_clap": 3.0, "steps": 40})
    assert w.session.recipe.cfg_context == 4.0
    assert w.panel.cfg_context.value() == pytest.approx(4.0)
    assert w.session.recipe.steps == 40 and w.panel.steps.value() == 40
    assert w.session.recipe.cfg_clap == 2.0  # kept
    # another model: what still holds the previous model's default follows the new one
    w.ctl.adopt_model_defaults({"cfg_context": 1.5, "cfg_clap": 1.0, "steps": 30})
    assert w.session.recipe.cfg_context == 1.5 and w.session.recipe.cfg_clap == 2.0
    assert w.panel.recipe().cfg_context == pytest.approx(1.5)
