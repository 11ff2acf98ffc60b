"""The app's layers without the window: the generation controller driven by a fake engine
bridge, session files, the actions table, tap tempo and the controller's recipe edits."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QObject, QSettings, Signal

from app.actions import ACTIONS, GENERATION_ACTIONS, Action, shortcut_rows
from app.controller import ActionError, SessionController
from app.generation import GenerationController, JobProgress, Outcome
from app.session_files import SessionFiles
from app.transport_bar import TapTempo
from engine.document.recipe import Recipe
from engine.document.session import Session, UndoStack, track_from_audio
from engine.service import Progress, StemResult

SR = 48000


class FakeBridge(QObject):
    """The signals and the calls of `EngineBridge`, with no engine process: the test plays
    the engine by emitting what it would."""

    sig_progress = Signal(object)
    sig_finished = Signal(object, object)
    sig_cancelled = Signal(object)
    sig_error = Signal(str)

    def __init__(self, accept: bool = True):
        super().__init__()
        self.accept = accept
        self.job = None
        self.sent: list = []
        self.cancelled = 0

    @property
    def busy(self) -> bool:
        return self.job is not None

    def generate(self, job) -> bool:
        if not self.accept:
            self.sig_error.emit("no model is loaded (Generate › Models…)")
            return False
        self.job = job
        self.sent.append(job)
        return True

    def arrange(self, job, parts: list) -> bool:
        if self.generate(job):
            self.parts = list(parts)
            return True
        return False

    def cancel(self) -> None:
        self.cancelled += 1

    # what the engine would say
    def finish(self, n: int = 1) -> None:
        job, self.job = self.job, None
        frames = int(job.request.get("duration", 1.0) * SR)
        stems = [StemResult(np.full((1, frames), 0.1, np.float32), SR, 7 + i, i, {"seed": 7 + i})
                 for i in range(n)]
        self.sig_finished.emit(job, stems)

    def finish_arrangement(self, order=None) -> None:
        """One stem per part, seed + i, as `engine.arrange` returns them (in `order`)."""
        job, self.job = self.job, None
        frames = int(job.request.get("duration", 1.0) * SR)
        seed, n = job.request["seed"], len(self.parts)
        stems = [StemResult(np.full((1, frames), 0.1 * (i + 1), np.float32), SR, seed + i, 0,
                            {"seed": seed + i, "arrangement": {"part": i + 1, "of": n,
                                                               "kind": kind, "value": value}})
                 for i, (kind, value) in enumerate(self.parts)]
        self.sig_finished.emit(job, [stems[i] for i in (order or range(n))])

    def report_cancelled(self) -> None:
        job, self.job = self.job, None
        self.sig_cancelled.emit(job)

    def fail(self, message: str) -> None:
        self.job = None
        self.sig_error.emit(message)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(accept: bool = True, min_interval_s: float = 0.05):
    s = Session(SR)
    s.recipe = Recipe(prompt="bass", mix=0.5, cfg_context=1.0, cfg_clap=1.0, steps=4, seed=3,
                      takes=2, stereo_width=0.0, duration=1.0)
    ctl = SessionController(s, UndoStack(s))
    bridge, clock = FakeBridge(accept), Clock()
    gen = GenerationController(bridge, ctl, min_interval_s=min_interval_s, clock=clock)
    got = {k: [] for k in ("started", "progress", "stopped", "landed", "done", "message",
                           "status")}
    gen.sig_started.connect(got["started"].append)
    gen.sig_progress.connect(got["progress"].append)
    gen.sig_stopped.connect(lambda: got["stopped"].append(True))
    gen.sig_landed.connect(lambda job, tracks, dt: got["landed"].append((job, tracks, dt)))
    gen.sig_done.connect(got["done"].append)
    gen.sig_message.connect(got["message"].append)
    gen.sig_status.connect(got["status"].append)
    return s, ctl, bridge, clock, gen, got


def job_for(ctl: SessionController):
    job = ctl.build_job("generate", ctl.session.recipe)
    return job


def test_a_job_that_finishes_lands_its_takes_as_one_undo_step(qtbot):
    s, ctl, bridge, clock, gen, got = make()
    assert gen.start(job_for(ctl)) and gen.busy
    assert got["started"] and got["status"] == ["generating: bass"]
    clock.t += 2.5
    bridge.finish(n=2)
    assert not gen.busy
    assert [t.name for t in s.tracks] == ["bass take1", "bass take2"]
    assert len(ctl.stack) == 1  # both takes are one step
    assert got["stopped"] == [True] and got["done"] == [Outcome.FINISHED]
    job, tracks, dt = got["landed"][0]
    assert [t.id for t in tracks] == [t.id for t in s.tracks] and dt == pytest.approx(2.5)


def test_a_cancelled_job_adds_nothing(qtbot):
    s, ctl, bridge, _clock, gen, got = make()
    gen.start(job_for(ctl))
    assert gen.cancel() and bridge.cancelled == 1
    bridge.report_cancelled()
    assert s.tracks == [] and len(ctl.stack) == 0
    assert got["done"] == [Outcome.CANCELLED] and got["stopped"] == [True]
    assert "nothing was added" in got["status"][-1]
    assert not gen.cancel()  # nothing runs now: nothing to cancel


def test_a_failed_job_is_a_message_and_ends_the_workflow(qtbot):
    s, ctl, bridge, _clock, gen, got = make()
    gen.start(job_for(ctl))
    bridge.fail("steps must be between 1 and 500")
    assert got["message"] == ["steps must be between 1 and 500"]
    assert got["done"] == [Outcome.FAILED] and got["stopped"] == [True] and s.tracks == []


def test_a_refused_job_never_starts(qtbot):
    _s, ctl, _bridge, _clock, gen, got = make(accept=False)
    assert not gen.start(job_for(ctl))
    assert not got["started"] and got["message"] == ["no model is loaded (Generate › Models…)"]


def test_an_error_while_another_job_runs_leaves_that_job_alone(qtbot):
    _s, ctl, bridge, _clock, gen, got = make()
    gen.start(job_for(ctl))
    bridge.sig_error.emit("wait for the current generation to finish before switching models")
    assert gen.busy and not got["stopped"] and not got["done"] and got["message"]


def test_progress_is_one_bar_for_the_whole_job_and_throttled(qtbot):
    _s, ctl, bridge, clock, gen, got = make(min_interval_s=0.05)
    gen.start(job_for(ctl))
    clock.t += 2.0
    bridge.sig_progress.emit(Progress(1, "sample", 1, 10))
    clock.t += 0.01  # a burst within the interval: dropped
    bridge.sig_progress.emit(Progress(1, "sample", 2, 10))
    clock.t += 0.01
    bridge.sig_progress.emit(Progress(1, "sample", 10, 10))  # the last step always comes
    clock.t += 0.01
    bridge.sig_progress.emit(Progress(1, "decode", 0, 1, message="decoding"))  # a new stage
    p = got["progress"]
    assert [x.format for x in p] == ["sample 1/10", "sample 10/10", "decode 0/1"]
    assert all(isinstance(x, JobProgress) for x in p)
    assert 0 < p[0].percent < p[1].percent <= p[2].percent <= 100
    assert p[0].label.startswith("step 1/10 · about ") and p[0].label.endswith(" left")
    assert p[2].label.startswith("decoding")


def test_an_arrangement_is_one_engine_job_landing_a_lane_per_part_in_one_step(qtbot):
    s, ctl, bridge, clock, gen, got = make()
    ctl.session.tracks.append(track_from_audio("song", np.zeros((1, SR), np.float32),
                                               role="context"))
    song = s.tracks[0]
    assert gen.start_arrangement(["drums", "", "bass"])
    (job,) = bridge.sent  # one job for the whole arrangement: no queue in the app
    assert bridge.parts == [("prompt", "drums"), ("prompt", "bass")]
    assert job.action == "arrange" and job.request["takes"] == 1
    assert job.request["seed"] == s.recipe.seed  # the base seed: part i gets seed + i
    assert job.context_spec["tracks"] == [song.id] and got["status"] == [
        "generating: drums, bass"]
    clock.t += 3.0
    bridge.finish_arrangement(order=[1, 0])  # whatever order: lanes follow the parts
    assert got["done"] == [Outcome.FINISHED] and got["stopped"] == [True]
    drums, bass = s.tracks[1:]
    assert [drums.name, bass.name] == ["drums take1", "bass take1"]
    assert float(drums.audio.max()) == pytest.approx(0.1)  # part 1's stem
    assert [drums.provenance["seed"], bass.provenance["seed"]] == [s.recipe.seed,
                                                                  s.recipe.seed + 1]
    assert drums.take_group != bass.take_group and s.take_active(drums) and s.take_active(bass)
    assert all(t.in_context and t.role == "context" for t in (drums, bass))
    # each part records what it heard: the context, and the parts before it
    assert drums.provenance["app"]["context"]["tracks"] == [song.id]
    assert bass.provenance["app"]["context"]["tracks"] == [song.id, drums.id]
    assert bass.provenance["app"]["prompt_override"] == "bass"
    assert ctl.regenerate_job(bass.id).request["prompt"] == "bass"
    _job, tracks, dt = got["landed"][0]
    assert [t.id for t in tracks] == [drums.id, bass.id] and dt == pytest.approx(3.0)
    assert len(ctl.stack) == 1  # the whole arrangement is one undo step
    ctl.stack.undo()
    assert [t.id for t in s.tracks] == [song.id]


def test_an_arrangement_progress_is_one_bar_over_all_parts(qtbot):
    _s, _ctl, bridge, clock, gen, got = make(min_interval_s=0.0)
    gen.start_arrangement(["drums", "bass"])
    clock.t += 2.0
    bridge.sig_progress.emit(Progress(1, "sample", 10, 10, message="part 1/2: sampling"))
    bridge.sig_progress.emit(Progress(1, "sample", 5, 10, message="part 2/2: sampling"))
    first, second = got["progress"]
    assert 40 <= first.percent <= 50 < second.percent < 100
    assert second.label.startswith("part 2/2 · step 5/10")


def test_an_arrangement_without_prompts_or_a_model_never_starts(qtbot):
    _s, _ctl, bridge, _clock, gen, got = make()
    assert not gen.start_arrangement(["", ""]) and not bridge.sent
    _s, _ctl, bridge, _clock, gen, got = make(accept=False)
    assert not gen.start_arrangement(["drums"]) and not got["started"]
    assert got["message"] == ["no model is loaded (Generate › Models…)"]


def test_cancel_ends_an_arrangement(qtbot):
    s, _ctl, bridge, _clock, gen, got = make()
    gen.start_arrangement(["drums", "bass", "keys"])
    assert gen.cancel() and bridge.cancelled == 1
    bridge.report_cancelled()
    assert len(bridge.sent) == 1 and got["done"] == [Outcome.CANCELLED] and s.tracks == []


# ---------------------------------------------------------------- controller recipe edits
def test_recipe_edits_undo_one_setting_and_app_defaults_make_no_step():
    s = Session(SR)
    ctl = SessionController(s, UndoStack(s))
    ctl.set_recipe_defaults({"cfg_clap": 1.25, "cfg_context": 1.25, "steps": 30, "seed": 1})
    assert len(ctl.stack) == 0 and not s.dirty
    ctl.set_recipe_value("cfg_clap", 2.0, merge=True)
    ctl.set_recipe_value("cfg_clap", 3.0, merge=True)  # one slider drag: one step
    assert len(ctl.stack) == 1 and s.dirty
    changed = ctl.adopt_model_defaults({"cfg_context": 8.0, "cfg_clap": 6.0, "steps": 40})
    assert changed == {"cfg_context": 8.0, "steps": 40}  # the hand-set cfg_clap stays
    ctl.stack.undo()
    # undoing the drag restores that setting only, not the model's guidance since
    assert s.recipe.cfg_clap == 1.25 and s.recipe.cfg_context == 8.0
    seed = ctl.draw_seed()
    assert s.recipe.seed == seed and len(ctl.stack) == 0
    s.recipe = s.recipe.replace(seed_locked=True)
    assert ctl.draw_seed() == seed


def test_switch_take_walks_the_group_and_bar_regions_snap():
    s = Session(SR)
    ctl = SessionController(s, UndoStack(s))
    with pytest.raises(ActionError):
        ctl.switch_take(None)
    a, b = (track_from_audio(n, np.zeros((1, SR * 4), np.float32), role="generated")
            for n in ("x take1", "x take2"))
    for i, t in enumerate((a, b)):
        t.take_group, t.take = "g", i + 1
    s.insert_track(a)
    s.insert_track(b)
    s.active_takes = {"g": a.id}
    assert ctl.switch_take(a.id) == b.id and s.take_active(b)
    ctl.set_tempo(120.0)  # 2 s bars
    r = ctl.add_bar_region(a.id, 2.7)
    assert (r.start, r.end) == (2.0, 4.0)


# ---------------------------------------------------------------- session files
def test_session_files_save_open_recent_and_autosave(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat)
    current = [Session(SR)]
    files = SessionFiles(settings, tmp_path / "autosave", lambda: current[0])
    replaced, messages = [], []
    files.sig_replaced.connect(replaced.append)
    files.sig_message.connect(messages.append)
    s = current[0]
    s.insert_track(track_from_audio("ctx", np.zeros((1, SR), np.float32)))
    assert files.autosave_now(wait=True) == tmp_path / "autosave" / files.slot
    assert files.save_to(tmp_path / "song") and not s.dirty
    assert files.recent() == [str(tmp_path / "song")]
    assert files.open_path(tmp_path / "song") and len(replaced[-1].tracks) == 1
    assert not files.open_path(tmp_path / "missing") and messages
    # another window's autosave, left by a crash, is offered and recovered
    other = SessionFiles(settings, tmp_path / "autosave", lambda: current[0])
    s.emit("session_changed", attr="tempo")  # dirty again
    files.autosave_now(wait=True)
    assert other.recovery_candidate() is not None
    other.sig_replaced.connect(replaced.append)
    assert other.recover() and replaced[-1].dirty
    assert other.recovery_candidate() is None


# ---------------------------------------------------------------- actions, tap tempo
def test_actions_table_feeds_the_shortcut_list():
    assert set(ACTIONS) == set(Action)  # every action has its row
    rows = dict((k, n) for n, k in shortcut_rows())
    assert rows["Ctrl+G"] == "Generate" and rows["Ctrl+Shift+R"] == "Add inpaint region at playhead"
    assert all(a.value in ("generate", "inpaint", "vary", "continue", "regenerate",
                           "use_context", "arrange") for a in GENERATION_ACTIONS)
    assert Action("inpaint") is Action.INPAINT
    with pytest.raises(ValueError):
        Action("regenerate_region")  # removed: nothing could ever fire it


def test_tap_tempo():
    tap = TapTempo()
    assert tap.tap(0.0) is None and tap.tap(0.5) is None
    assert tap.tap(1.0) == pytest.approx(120.0)
    assert tap.tap(5.0) is None  # a pause starts over


# ---------------------------------------------------------------- enable rules, action jobs
def test_action_states_follow_the_selection_and_the_engine():
    from app.actions import action_states

    sel_actions = {Action.INPAINT, Action.VARY, Action.CONTINUE, Action.REGENERATE,
                   Action.USE_CONTEXT, Action.USE_REFERENCE, Action.EXPORT_SELECTED}
    idle = action_states(False, None)
    assert idle[Action.GENERATE] and idle[Action.ARRANGE]
    assert not any(idle[a] for a in sel_actions)
    take = track_from_audio("bass take1", np.zeros((1, SR), np.float32), role="generated")
    assert not action_states(False, take)[Action.INPAINT]  # no region drawn yet
    assert not action_states(False, take)[Action.REGENERATE]  # no recipe to run again
    from engine.document.session import Region

    take.regions, take.provenance = [Region(0.1, 0.5)], {"seed": 1}
    assert all(action_states(False, take).values())
    busy = action_states(True, take)
    assert [a for a, on in busy.items() if on] == [Action.USE_CONTEXT, Action.USE_REFERENCE,
                                                   Action.EXPORT_SELECTED]
    ctx = track_from_audio("song", np.zeros((1, SR), np.float32), role="context")
    assert not action_states(False, ctx)[Action.USE_CONTEXT]  # only a take joins the context


def test_job_for_action_draws_a_seed_and_edits_go_through_the_stack():
    from engine.errors import RequestError

    s, ctl, *_ = make()
    ctl.add_audio_tracks([("song", np.zeros((1, SR * 2), np.float32))])
    seed = s.recipe.seed
    job = ctl.job_for_action("generate")
    assert job.recipe is s.recipe and job.request["seed"] == s.recipe.seed != seed
    assert job.takes == s.recipe.takes == 2
    with pytest.raises(ActionError, match="already running"):
        ctl.job_for_action("vary", s.tracks[0].id, busy=True)
    with pytest.raises(ActionError, match="select a generated take"):
        ctl.job_for_action("use_context")
    steps = len(ctl.stack)
    assert ctl.job_for_action("use_reference", s.tracks[0].id) is None
    assert s.recipe.reference_track == s.tracks[0].id and len(ctl.stack) == steps + 1
    # a recipe edit is strict: an unknown setting or a value out of range makes no step
    with pytest.raises(TypeError):
        ctl.set_recipe_value("stepz", 3)
    with pytest.raises(RequestError):
        ctl.set_recipe_value("steps", 500)
    assert len(ctl.stack) == steps + 1


def test_regenerate_rebuilds_a_take_with_its_own_seed_from_its_recorded_recipe():
    s, ctl, *_ = make()
    ctl.add_audio_tracks([("song", np.zeros((1, SR * 2), np.float32))])
    job = ctl.build_job("generate", s.recipe.replace(seed=2**31 - 1))
    stems = [StemResult(np.full((1, SR), 0.1, np.float32), SR, 2**31 - 1 + i, i,
                        {"seed": 2**31 - 1 + i}) for i in range(2)]
    _, second = ctl.land_results(job, stems, job.recipe)
    # take 2 drew seed + 1, past the panel's range: regenerate uses it as it is
    again = ctl.regenerate_job(second.id)
    assert again.request["seed"] == 2**31 and again.takes == 1 and again.request["takes"] == 1
    assert again.request["prompt"] == "bass" and again.record_action == "generate"
    assert again.join_group == second.take_group and again.name == "bass"
    # the recorded recipe is a file's data: an odd value is clamped, not a crash
    second.provenance["app"]["recipe"]["steps"] = 9000
    assert ctl.regenerate_job(second.id).request["steps"] == 200
    ctl.delete_track(s.tracks[0].id)  # the context it heard
    with pytest.raises(ActionError, match="context lane .* deleted"):
        ctl.regenerate_job(second.id)
