"""Session model: undo/redo with merging, save/load round trip, autosave, peaks, mute/solo."""

import json

import numpy as np
import pytest

from engine.document.session import (
    AddTracks,
    PeakPyramid,
    Region,
    RemoveTrack,
    Session,
    SessionError,
    SetRegions,
    SetSessionAttr,
    SetTrackAttr,
    UndoStack,
    autosave,
    compute_peaks,
    discard_autosave,
    recovery_candidates,
    track_from_audio,
)


def _session():
    s = Session(48000)
    rng = np.random.default_rng(0)
    s.insert_track(track_from_audio("drums", rng.standard_normal((2, 48000)).astype(np.float32) * 0.1))
    s.insert_track(track_from_audio("bass", rng.standard_normal((1, 24000)).astype(np.float32) * 0.1,
                                    offset=12000))
    return s


def test_peaks_bound_the_signal():
    x = np.sin(np.linspace(0, 200, 100_000, dtype=np.float32))[None]
    p = compute_peaks(x, 64)
    assert p.shape == (2, 1563)
    assert np.all(p[0] <= p[1])
    assert p[1].max() == pytest.approx(x.max()) and p[0].min() == pytest.approx(x.min())
    pyr = PeakPyramid(p)
    assert len(pyr.levels) == 2
    bf, i0, seg = pyr.segment(0, 100_000, frames_per_pixel=1000)
    assert bf >= 256 and seg.shape[0] == 2 and seg.shape[1] <= 100_000 // 1000 * 4 + 4
    assert seg[1].max() == pytest.approx(x.max())


def test_undo_redo_and_slider_merge():
    s = _session()
    st = UndoStack(s)
    events = []
    s.subscribe(lambda e, p: events.append(e))
    tid = s.tracks[0].id
    for v in (-1.0, -2.0, -3.0):  # a slider drag
        st.push(SetTrackAttr(s, tid, "gain_db", v, merge=True))
    st.close_merge()
    st.push(SetTrackAttr(s, tid, "gain_db", -6.0, merge=True))
    assert len(st) == 2
    st.undo()
    assert s.track(tid).gain_db == -3.0
    st.undo()
    assert s.track(tid).gain_db == 0.0
    st.redo()
    assert s.track(tid).gain_db == -3.0
    assert "track_changed" in events

    st.push(SetRegions(s, tid, [Region(0.1, 0.4)]))
    st.push(SetSessionAttr(s, "tempo", 100.0))
    st.push(RemoveTrack(s, s.tracks[1].id))
    assert len(s.tracks) == 1
    st.undo()
    assert [t.name for t in s.tracks] == ["drums", "bass"]
    st.undo()
    st.undo()
    assert s.tempo is None and s.track(tid).regions == []
    st.redo()
    assert s.track(tid).regions[0].end == 0.4
    assert st.can_redo() is not False  # one more redo is available
    t = track_from_audio("new", np.zeros((1, 10), np.float32))
    st.push(AddTracks([t]))
    assert not st.can_redo()


def test_mute_solo_and_takes():
    s = _session()
    a, b = s.tracks
    assert s.audible(a) and s.audible(b)
    b.solo = True
    assert not s.audible(a) and s.audible(b)
    b.solo = False
    a.mute = True
    assert not s.audible(a)
    a.mute = False
    a.take_group = b.take_group = "g"
    s.active_takes = {"g": b.id}
    assert not s.audible(a) and s.audible(b)
    mix = s.render()
    assert mix.shape == (2, 48000)
    assert np.allclose(mix[0, :12000], 0) and np.allclose(mix[0, 12000:36000], b.audio[0])


def test_snap_and_bars():
    s = Session()
    assert s.snap(1.3) == 1.3
    s.tempo, s.meter = 120.0, (4, 4)
    assert s.seconds_per_bar() == 2.0
    assert s.snap(1.3) == 2.0
    assert s.bars_beats(2.5) == "2|2"


def test_bars_count_from_bar_one(tmp_path):
    """A clip whose first downbeat is 0.5 s in: bar 1 starts there, the half-second before
    it is the end of bar 0, and snapping, bar|beat and saving all follow."""
    s = Session()
    s.tempo, s.meter, s.bar_start = 120.0, (4, 4), 0.5
    assert s.bars_at(2.5) == 1.0 and s.bar_time(2) == 4.5
    assert s.snap(1.3) == 0.5 and s.snap(1.6) == 2.5 and s.snap(1.6, 4) == 1.5
    assert s.bars_beats(0.5) == "1|1" and s.bars_beats(3.0) == "2|2"
    assert s.bars_beats(0.0) == "0|4"  # the pick-up before bar 1
    assert s.bars_beats(0.4999) == "1|1"  # a hair before bar 1 shows as bar 1, not "0|5.00"
    s.save(tmp_path / "song")
    assert Session.load(tmp_path / "song").bar_start == 0.5
    m = json.loads((tmp_path / "song" / "session.json").read_text())
    for bad, want in ((-3.0, 0.0), (None, 0.0)):  # a negative or missing bar 1: the zero
        m["bar_start"] = bad
        (tmp_path / "song" / "session.json").write_text(json.dumps(m))
        assert Session.load(tmp_path / "song").bar_start == want
    m["bar_start"] = "soon"
    (tmp_path / "song" / "session.json").write_text(json.dumps(m))
    with pytest.raises(SessionError, match="bar_start"):
        Session.load(tmp_path / "song")


def test_save_load_roundtrip(tmp_path):
    s = _session()
    s.tempo, s.key, s.loop = 96.0, "A minor", (0.25, 0.75)
    s.tracks[1].regions = [Region(0.3, 0.5)]
    s.tracks[1].provenance = {"seed": 7, "prompt": "bass"}
    s.save(tmp_path / "song")
    m = json.loads((tmp_path / "song" / "session.json").read_text())
    assert m["version"] == 1 and len(m["tracks"]) == 2
    r = Session.load(tmp_path / "song")
    assert r.tempo == 96.0 and r.loop == (0.25, 0.75) and r.key == "A minor"
    assert [t.name for t in r.tracks] == ["drums", "bass"]
    assert np.array_equal(r.tracks[0].audio, s.tracks[0].audio)
    assert r.tracks[1].offset == 12000 and r.tracks[1].regions[0].start == 0.3
    assert r.tracks[1].provenance["seed"] == 7
    assert r.tracks[0]._peaks is not None  # peak cache read back
    # removing a track and saving again drops its audio
    r.tracks.pop(0)
    r.save(tmp_path / "song")
    assert len(list((tmp_path / "song" / "audio").glob("*.wav"))) == 1
    with pytest.raises(SessionError):
        Session.load(tmp_path / "nothing")


def test_autosave_recovery(tmp_path):
    s = _session()
    autosave(s, tmp_path / "auto", "slot1")
    c = recovery_candidates(tmp_path / "auto")
    assert len(c) == 1 and c[0][1]["title"] == "Untitled"
    r = Session.load(c[0][0])
    assert len(r.tracks) == 2
    discard_autosave(tmp_path / "auto", "slot1")
    assert recovery_candidates(tmp_path / "auto") == []
