"""Issue 17, "daily use": what a musician trips over in the first hour, driven through the
real widgets (offscreen): focus after a click, the wheel, exports after A/B, take names, the
Length rule, selecting a lane, and the smaller items."""

import re
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.actions import Action, shortcut_rows
from app.controller import Job, command_line, job_fraction, recipe_lines
from tests.test_app_flow import generate, win, win_nomodel  # noqa: F401 - fixtures
from tests.test_tempo import click_track

SR = 48000


def fake_stems(values, seconds=4.0, seed=7):
    """Stand-ins for engine stems: constant signals we can find again in a mix."""
    n = int(seconds * SR)
    return [SimpleNamespace(audio=np.full((1, n), v, np.float32), sample_rate=SR,
                            provenance={"seed": seed + i, "take": i,
                                        "parameters": {"duration": seconds}})
            for i, v in enumerate(values)]


def land(w, name, values, join=None, action="generate"):
    job = Job(action, {"duration": 4.0}, name, 0, join_group=join)
    return w.ctl.land_results(job, fake_stems(values), w.session.recipe)


def focus_target(w):
    return QApplication.focusWidget() or w


# ---------------------------------------------------------------- item 1: focus
def test_space_and_undo_work_after_clicking_generate(qtbot, win, clip_wav):  # noqa: F811
    w = win
    w.import_paths([clip_wav])
    w.activateWindow()
    w.ctl.set_tempo(120.0)
    w.panel.steps.setValue(2)
    w.panel.takes.setValue(1)
    w.panel.stereo_width.set_value(0.0)
    n = len(w.session.tracks)
    with qtbot.waitSignal(w.sig_generation_done, timeout=60_000):
        qtbot.mouseClick(w.panel.buttons["generate"], Qt.LeftButton)
    assert len(w.session.tracks) == n + 1
    assert QApplication.focusWidget() is not w.transport_bar.tempo
    qtbot.waitUntil(lambda: w.transport.st.buf.shape[0] > 0)
    qtbot.keyClick(focus_target(w), Qt.Key_Space)
    assert w.transport.is_playing() and w.session.tempo == 120.0
    qtbot.keyClick(focus_target(w), Qt.Key_Space)
    assert not w.transport.is_playing()
    # even with the tempo box focused (clicked on purpose), Space and Ctrl+Z are the DAW's
    w.transport_bar.tempo.setFocus()
    qtbot.keyClick(w.transport_bar.tempo, Qt.Key_Space)
    assert w.transport.is_playing() and w.session.tempo == 120.0
    qtbot.keyClick(w.transport_bar.tempo, Qt.Key_Space)
    qtbot.keyClick(w.transport_bar.tempo, Qt.Key_Z, Qt.ControlModifier)
    assert len(w.session.tracks) == n  # the generation was undone
    # Enter in a number box commits it and gives the keyboard back to the lanes
    w.transport_bar.tempo.setFocus()
    w.transport_bar.tempo.lineEdit().selectAll()
    qtbot.keyClicks(w.transport_bar.tempo, "96")
    qtbot.keyClick(w.transport_bar.tempo, Qt.Key_Return)
    assert w.session.tempo == 96.0 and QApplication.focusWidget() is w.lanes
    # Ctrl+0 fits the view whatever has the focus
    w.lanes.set_visible_range(1.0, 1.5)
    w.panel.seed.setFocus()
    qtbot.keyClick(w.panel.seed, Qt.Key_0, Qt.ControlModifier)
    x0, x1 = w.lanes.visible_range()
    assert x1 - x0 > 3.5


# ---------------------------------------------------------------- item 3: exports
def test_exports_hold_the_chosen_take(qtbot, win_nomodel, clip_wav, tmp_path):  # noqa: F811
    w = win_nomodel
    w.import_paths([clip_wav])
    ctx = w.session.tracks[0]
    a, b = land(w, "bass", [0.1, 0.2])
    header_b = w.lanes.rows[b.id].header
    assert header_b.take.isVisible()
    qtbot.mouseClick(header_b.take, Qt.LeftButton)  # choose take B
    assert w.session.take_active(b) and not w.session.take_active(a)
    files = w.exports.export_stems_to(tmp_path / "out")
    mix_file = next(f for f in files if f.name.startswith("mix"))
    mix, _ = sf.read(mix_file, always_2d=True, dtype="float32")
    expect = ctx.audio[0] + 0.2
    np.testing.assert_allclose(mix[:, 0], expect / max(1.0, np.abs(expect).max()), atol=1e-4)
    out = w.exports.export_dawproject_to(tmp_path / "song.dawproject")
    xml = zipfile.ZipFile(out).read("project.xml").decode()
    mutes = dict(re.findall(r'<Track id="[^"]+" name="([^"]+)".*?<Mute [^>]*value="(\w+)"',
                            xml, re.S))
    assert mutes[a.name] == "true" and mutes[b.name] == "false" and mutes[ctx.name] == "false"
    # the option: every take mixed and unmuted
    w.act[Action.ALL_TAKES].trigger()
    assert w.act[Action.ALL_TAKES].isChecked()
    files = w.exports.export_stems_to(tmp_path / "all")
    mix, _ = sf.read(next(f for f in files if f.name.startswith("mix")), always_2d=True,
                     dtype="float32")
    expect = ctx.audio[0] + 0.3
    np.testing.assert_allclose(mix[:, 0], expect / max(1.0, np.abs(expect).max()), atol=1e-4)
    xml = zipfile.ZipFile(w.exports.export_dawproject_to(tmp_path / "all.dawproject")) \
        .read("project.xml").decode()
    assert 'name="Mute" value="true"' not in xml


# ---------------------------------------------------------------- item 4: the wheel
def wheel(plot, dy, mods=Qt.NoModifier, dx=0):
    vp = plot.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                     QPoint(dx, dy), Qt.NoButton, mods, Qt.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    QApplication.processEvents()


def test_wheel_scrolls_and_ctrl_wheel_zooms_within_the_session(qtbot, win_nomodel, clip_wav):  # noqa: F811
    w = win_nomodel
    for _ in range(12):
        w.import_paths([clip_wav])
    QApplication.processEvents()
    L = w.lanes
    bar = L.scroll.verticalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(0)
    plot = L.rows[w.session.tracks[0].id].plot
    before = L.visible_range()
    wheel(plot, -120)  # a plain wheel notch down: the lanes scroll, time stays
    assert bar.value() > 0
    assert L.visible_range() == pytest.approx(before)
    L.set_visible_range(1.0, 2.0)
    wheel(plot, -120, Qt.ShiftModifier)  # Shift+wheel: later in time, same width
    x0, x1 = L.visible_range()
    assert x0 > 1.0 and x1 - x0 == pytest.approx(1.0)
    wheel(plot, 120, Qt.ControlModifier)  # Ctrl+wheel up: zoom in around the pointer
    assert L.visible_range()[1] - L.visible_range()[0] < 1.0
    for _ in range(40):  # zooming out stops at the session
        wheel(plot, -120, Qt.ControlModifier)
    lo, hi = L.content_span()
    x0, x1 = L.visible_range()
    assert x1 - x0 <= hi - lo + 1e-6 and x0 >= lo - 1e-6 and x1 <= hi + 1e-6
    assert hi < 5.0  # a 4 s session, not minutes
    # a new lane below the view: the view follows it
    bar.setValue(0)
    t = land(w, "vary", [0.1])[0]
    QApplication.processEvents()
    qtbot.waitUntil(lambda: bar.value() > 0)
    row = L.rows[t.id]
    top = row.mapTo(L.scroll.widget(), QPoint(0, 0)).y()
    assert bar.value() <= top <= bar.value() + L.scroll.viewport().height()


# ---------------------------------------------------------------- item 6: take names
def test_take_names_go_on_and_long_names_end_in_an_ellipsis(qtbot, win_nomodel, clip_wav):  # noqa: F811
    w = win_nomodel
    w.import_paths([clip_wav])
    first = land(w, "funky bass", [0.1, 0.2])
    second = land(w, "funky bass", [0.1, 0.2])
    names = [t.name for t in first + second]
    assert names == ["funky bass take1", "funky bass take2", "funky bass take3",
                     "funky bass take4"]
    # a variation of a take joins its group: A/B chooses among all of them
    var = land(w, "funky bass take2 var", [0.3], join=first[1].take_group, action="vary")
    assert var[0].name == "funky bass take5" and var[0].take_group == first[0].take_group
    assert w.session.take_active(var[0])
    refs = [w.panel.reference.itemText(i) for i in range(w.panel.reference.count())]
    assert len(refs) == len(set(refs))
    # a long name is cut with an ellipsis and shown whole in the tooltip
    long = "a very long prompt about a warm round fretless bass with lots of slides " * 2
    t = land(w, long.strip(), [0.1])[0]
    label = w.lanes.rows[t.id].header.name
    QApplication.processEvents()
    assert label.text().endswith("…") and len(label.text()) < len(t.name)
    assert t.name in label.toolTip()


# ---------------------------------------------------------------- item 7: Length
def test_the_panel_says_which_length_generate_uses(qtbot, win_nomodel, clip_wav):  # noqa: F811
    w = win_nomodel
    assert "this length" in w.panel.length_rule.text()
    w.import_paths([clip_wav])
    assert "follows the context (4.00 s)" in w.panel.length_rule.text()
    w.panel.duration.setValue(10.0)
    job = w.ctl.build_job("generate", w.session.recipe)
    assert job.request["duration"] == pytest.approx(4.0, abs=1e-3)
    [t] = w.ctl.land_results(job, fake_stems([0.1]), job.recipe)
    # provenance: the app's recipe says what the engine did, not the panel's 10 s
    assert t.provenance["app"]["recipe"]["duration"] == pytest.approx(4.0, abs=1e-3)
    w.ctl.set_tempo(None)  # no bar snapping: the loop is what was drawn
    w.ctl.set_loop((1.0, 3.0))
    assert "loop region (2.00 s)" in w.panel.length_rule.text()


# ---------------------------------------------------------------- item 10: selection
def test_clicking_a_lane_name_selects_it_and_the_playhead_stays(qtbot, win_nomodel, clip_wav):  # noqa: F811
    w = win_nomodel
    w.import_paths([clip_wav])
    w.import_paths([clip_wav])
    t1, t2 = w.session.tracks
    w.activateWindow()
    assert not w.panel.buttons["vary"].isEnabled()
    w.seek(1.0)
    qtbot.mouseClick(w.lanes.rows[t1.id].header.name, Qt.LeftButton)
    assert w.lanes.selected == t1.id and w.panel.buttons["vary"].isEnabled()
    assert w.lanes.rows[t1.id].header.property("selected") == "true"
    # a click on the waveform selects that lane without moving the playhead
    plot = w.lanes.rows[t2.id].plot
    vb = plot.getViewBox()
    pt = plot.mapFromScene(vb.mapViewToScene(QPointF(3.0, 0.0)))
    qtbot.mouseClick(plot.viewport(), Qt.LeftButton, pos=pt)
    assert w.lanes.selected == t2.id
    assert w.transport.position() == pytest.approx(1.0, abs=1e-3)
    assert w.lanes.rows[t2.id].header.property("selected") == "true"
    assert w.lanes.rows[t1.id].header.property("selected") == "false"
    # Up/Down walk the lanes; Delete removes the highlighted one
    qtbot.keyClick(w.lanes, Qt.Key_Up)
    assert w.lanes.selected == t1.id
    qtbot.keyClick(w.lanes, Qt.Key_Delete)
    assert [t.id for t in w.session.tracks] == [t2.id] and w.lanes.selected is None
    qtbot.keyClick(w.lanes, Qt.Key_Delete)  # nothing selected: nothing deleted
    assert [t.id for t in w.session.tracks] == [t2.id]
    # double-click on the name renames it
    header = w.lanes.rows[t2.id].header
    qtbot.mouseDClick(header.name, Qt.LeftButton)
    assert header.name_edit.isVisible()
    header.name_edit.setText("drums")
    qtbot.keyClick(header.name_edit, Qt.Key_Return)
    assert w.session.tracks[0].name == "drums" and header.name.full_text == "drums"


# ---------------------------------------------------------------- item 12 and keyboard flow
def test_help_about_loop_label_and_small_window(qtbot, win_nomodel):  # noqa: F811
    w = win_nomodel
    assert w.transport_bar.b_loop.text() == "⟲ Loop"
    qtbot.mouseClick(w.transport_bar.b_loop, Qt.LeftButton)
    qtbot.mouseClick(w.transport_bar.b_loop, Qt.LeftButton)
    assert w.transport_bar.b_loop.text() == "⟲ Loop"
    keys = dict((k, n) for n, k in shortcut_rows())
    assert "Space" in keys and "Ctrl+B" in keys and "Ctrl+Shift+R" in keys
    about = w.dialogs.about_text()
    assert "Riffwright 0." in about and "MIT" in about and "Fonts" in about
    w.act[Action.ABOUT].trigger()  # Help › About, through the actions table
    assert w.dialogs.about_box.isVisible()
    w.dialogs.about_box.close()
    # the smallest window still shows the Generate button
    w.resize(200, 200)
    QApplication.processEvents()
    assert (w.width(), w.height()) >= (640, 460)
    b = w.panel.buttons["generate"]
    top_left = b.mapTo(w, QPoint(0, 0))
    assert b.isVisible() and 0 <= top_left.y() and top_left.y() + b.height() <= w.height()


def test_one_progress_for_the_whole_job_and_a_readable_recipe(tiny_bundle):
    seq = [("encode", 1.0), ("sample", 0.5), ("sample", 1.0), ("stereo", 0.0),
           ("stereo", 1.0), ("decode", 0.5), ("done", 1.0)]
    fr = [job_fraction(s, f, True) for s, f in seq]
    assert fr == sorted(fr) and fr[-1] == 1.0 and 0.2 < fr[1] < 0.3
    assert job_fraction("sample", 1.0, False) > 0.85
    prov = {"seed": 42, "take": 1, "takes_in_batch": 2, "device": "cpu",
            "model": {"name": "tiny", "hash": "abc", "path": str(tiny_bundle)},
            "inputs": {"source": {"label": "bass.wav"}},
            "parameters": {"mode": "inpaint", "prompt": "walking bass", "cfg_context": 8.0,
                           "cfg_clap": 6.0, "steps": 30, "stereo_width": 0.4,
                           "inpaint": [2.0, 4.0], "sampler": "heun"},
            "app": {"action": "inpaint", "recipe": {}}}
    text = " ".join(recipe_lines(prov))
    assert "walking bass" in text and "Seed <b>42</b>" in text and "2–4 s" in text
    cmd = command_line(prov)
    assert cmd.startswith("riffwright generate") and "--inpaint 2:4 --source bass.wav" in cmd
    assert "--seed 42" in cmd and "'walking bass'" in cmd


def test_keyboard_take_switch_and_region_at_playhead(qtbot, win_nomodel, clip_wav):  # noqa: F811
    w = win_nomodel
    w.import_paths([clip_wav])
    w.activateWindow()
    a, b = land(w, "bass", [0.1, 0.2])
    w.ctl.set_tempo(120.0)
    w.lanes.select(a.id)
    w.focus_lanes()
    qtbot.keyClick(w.lanes, Qt.Key_B, Qt.ControlModifier)  # A is heard: switch to B
    assert w.session.take_active(b) and w.lanes.selected == b.id
    w.seek(2.5)
    qtbot.keyClick(w.lanes, Qt.Key_R, Qt.ControlModifier | Qt.ShiftModifier)
    assert [(r.start, r.end) for r in b.regions] == [(2.0, 4.0)]
    assert w.panel.buttons["inpaint"].isEnabled()
    # the provenance dialog: a recipe and a copy button for its command line
    b.provenance = {"seed": 8, "parameters": {"mode": "accompaniment", "steps": 3},
                    "model": {"name": "m"}, "app": {"action": "generate", "recipe": {}}}
    w.show_provenance(b.id)
    dlg = w.dialogs.provenance_box
    copy = next(x for x in dlg.findChildren(type(w.panel.buttons["generate"]))
                if x.text() == "Copy command line")
    qtbot.mouseClick(copy, Qt.LeftButton)
    assert QApplication.clipboard().text().startswith("riffwright generate")
    dlg.close()


# ---------------------------------------------------------------- item 11: tempo
def test_replacing_the_context_resets_tempo_loop_and_playhead(qtbot, win_nomodel, tmp_path):  # noqa: F811
    w = win_nomodel
    a = tmp_path / "long.wav"
    sf.write(a, click_track(100, 12)[0], SR)
    w.import_paths([a])
    assert w.session.tempo == pytest.approx(100, abs=0.2)
    w.ctl.set_loop((8.0, 11.0))
    w.seek(10.0)
    w.ctl.set_bar_start(0.3)
    w.ctl.delete_track(w.session.tracks[0].id)
    assert w.transport.position() == 0.0  # nothing left: back to the start
    b = tmp_path / "short.wav"
    sf.write(b, click_track(84, 6)[0], SR)
    w.import_paths([b])
    assert w.session.tempo == pytest.approx(84, abs=0.2)
    assert w.session.loop is None  # the old loop lay past the new end
    assert w.session.bar_start == 0.0  # the old clip's bar 1 means nothing for this one
    assert w.transport.position() <= w.session.seconds


def test_bar_one_from_the_box_or_the_playhead(qtbot, win_nomodel, tmp_path):  # noqa: F811
    """A clip whose first downbeat is late: the musician types where bar 1 begins, or puts
    the playhead there and presses Ctrl+Shift+B; the clock, the ruler and undo follow."""
    w = win_nomodel
    a = tmp_path / "clip.wav"
    sf.write(a, click_track(120, 8)[0], SR)
    w.import_paths([a])
    box = w.transport_bar.bar_start
    w.ctl.set_tempo(None)
    assert not box.isEnabled()  # no tempo, no bars
    w.seek(1.0)
    w.act[Action.BAR_ONE].trigger()
    assert w.session.bar_start == 0.0 and "set a tempo first" in w.status_text.text()
    w.ctl.set_tempo(120.0)
    assert box.isEnabled()
    box.setFocus()
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, "0.25")
    qtbot.keyClick(box, Qt.Key_Return)
    assert w.session.bar_start == 0.25
    w.seek(0.75)  # half a bar in at 120 BPM, 4/4
    assert "1|2" in w.transport_bar.clock.text()
    w.seek(1.5)
    qtbot.keyClick(focus_target(w), Qt.Key_B, Qt.ControlModifier | Qt.ShiftModifier)
    assert w.session.bar_start == 1.5 and box.value() == 1.5
    assert "1|1" in w.transport_bar.clock.text()  # the clock counts from the new bar 1
    assert w.lanes.bars_axis.tickValues(0, 8, 800)[0][1][:2] == [1.5, 3.5]
    w.seek(0.0)  # from the start, Right goes to bar 1, not past it
    for key, want in ((Qt.Key_Right, 1.5), (Qt.Key_Right, 3.5), (Qt.Key_Left, 1.5)):
        qtbot.keyClick(w.lanes, key)
        qtbot.waitUntil(lambda want=want: abs(w.transport.position() - want) < 1e-6)
    qtbot.keyClick(focus_target(w), Qt.Key_Z, Qt.ControlModifier)
    assert w.session.bar_start == 0.25 and box.value() == 0.25


def test_add_checkpoint_help_is_not_cut(qtbot):
    from app.models_dialog import CheckpointDialog

    dlg = CheckpointDialog(None, "/somewhere/model.pt")
    qtbot.addWidget(dlg)
    dlg.show()
    QApplication.processEvents()
    hint = dlg.hint
    assert "checksum" in hint.text()
    assert hint.height() >= hint.heightForWidth(hint.width())
