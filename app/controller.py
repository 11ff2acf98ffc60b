"""Session edits and generation recipes, without Qt: the testable heart of the window.

Every edit becomes an undo command on the `UndoStack`; the view only ever reads the session.
`build_job` turns a musician's action (Generate, Inpaint, Vary, Continue, Regenerate, Arrange)
and the panel settings into a `Job`: the request fields for `engine.generation` plus where the
results land. `land_results` turns the stems into take lanes (one undo step).
"""

from __future__ import annotations

import math
import random
import re
import shlex
import uuid
from dataclasses import dataclass, field
from html import escape as _esc
from pathlib import Path
from typing import Any

import numpy as np

from engine.diffusion.context_features import BeatGrid
from engine.document.recipe import Recipe
from engine.document.session import (
    AddTracks,
    Command,
    Macro,
    Region,
    RemoveTrack,
    Session,
    SetRegions,
    SetSessionAttr,
    SetTrackAttr,
    Track,
    UndoStack,
    track_from_audio,
)
from engine.document.tempo import estimate_tempo
from engine.errors import RiffwrightError
from engine.params import PARAMS
from engine.service import MODEL_DEFAULT_KEYS

# the recipe a new session starts with (engine/document/recipe.py: generation parameters from
# the one parameter table in engine/params.py, which the CLI, resolve and bundle defaults read)
DEFAULT_RECIPE = Recipe()


class ActionError(RiffwrightError):
    """An action that cannot run with the current selection (shown as a message)."""


@dataclass(frozen=True)
class ContextMix:
    """The context of a job, rendered when the job is sent rather than when it is built:
    rendering minutes of several lanes takes a few hundred milliseconds, which the bridge
    spends off the GUI thread."""

    session: Session
    tracks: tuple[Track, ...]
    start: float
    end: float

    def render(self) -> np.ndarray:
        return self.session.render(list(self.tracks), self.start, self.end, apply_mute=False)


@dataclass
class Job:
    """One generation: request fields for GenerationRequest, and where the stems go.
    `request["context"]` may be a `ContextMix`; `resolved_request()` renders it."""

    action: str
    request: dict
    name: str
    offset: int  # frames: where the stems start in the session
    source_track: str | None = None
    context_spec: dict = field(default_factory=dict)
    recipe: Recipe = DEFAULT_RECIPE  # the panel settings it was built from
    record_action: str = ""  # the action written into provenance (regenerate keeps the original)
    join_group: str | None = None  # the take group the results join (derived from a take)
    takes: int = 1  # how many takes the request asks for (the rows the lanes reserve)

    def resolved_request(self) -> dict:
        """The request with every deferred part rendered (call it off the GUI thread)."""
        return {k: v.render() if isinstance(v, ContextMix) else v for k, v in self.request.items()}


class SetRecipeValue(Command):
    """One panel setting changed. Undo restores only that setting, so undoing an old edit
    never reverts settings changed since (the seed drawn for a generation, a model's
    guidance). A slider drag merges into one step per setting."""

    def __init__(self, s: Session, key: str, value: Any, merge: bool = False):
        current = s.recipe or DEFAULT_RECIPE
        current.replace(**{key: value})  # strict: an unknown setting or a bad value fails here
        self.key, self.new = key, value
        self.old = getattr(current, key)
        self.text = f"Change {key.replace('_', ' ')}"
        self.merge_key = ("recipe", key) if merge else None

    def _set(self, s: Session, value: Any) -> None:
        s.set_attr("recipe", (s.recipe or DEFAULT_RECIPE).replace(**{self.key: value}))

    def redo(self, s):
        self._set(s, self.new)

    def undo(self, s):
        self._set(s, self.old)

    def merge(self, other):
        self.new = other.new
        return True


class SessionController:
    """Edits the session through undo commands; builds generation jobs."""

    def __init__(self, session: Session, stack: UndoStack):
        self.session = session
        self.stack = stack
        # guidance/steps of the loaded model, adopted by recipes that still hold the old ones
        self.model_defaults = {k: getattr(DEFAULT_RECIPE, k) for k in MODEL_DEFAULT_KEYS}
        # whether the loaded model can steer towards the harmony and the onsets (a session's
        # settings stay in its recipe and wait for such a model)
        self.harmony_available = self.rhythm_available = False

    def bind(self, session: Session, stack: UndoStack) -> None:
        self.session, self.stack = session, stack

    @property
    def recipe(self) -> Recipe:
        """The session's recipe (the defaults until one is chosen)."""
        return self.session.recipe or DEFAULT_RECIPE

    # ---- track edits
    def set_track_attr(self, tid: str, attr: str, value: Any, merge: bool = False) -> None:
        t = self.session.track(tid)
        if getattr(t, attr) == value:
            return
        self.stack.push(SetTrackAttr(self.session, tid, attr, value, merge=merge))

    def delete_track(self, tid: str) -> None:
        self.stack.push(RemoveTrack(self.session, tid))

    def add_audio_tracks(self, items: list[tuple[str, np.ndarray]], role: str = "context",
                         source_files: list[str] | None = None,
                         peaks: list | None = None) -> list[Track]:
        tracks = []
        for i, (name, audio) in enumerate(items):
            t = track_from_audio(name, audio, role=role)
            if peaks:
                t._peaks = peaks[i]
            t.in_context = role == "context"
            if source_files:
                t.source_file = source_files[i]
            tracks.append(t)
        if tracks:
            self.stack.push(AddTracks(tracks, text=f"Import {len(tracks)} file(s)"))
        return tracks

    def activate_take(self, tid: str) -> None:
        t = self.session.track(tid)
        if not t.take_group or self.session.take_active(t):
            return
        self.stack.push(SetSessionAttr(self.session, "active_takes",
                                       {**self.session.active_takes, t.take_group: tid},
                                       text=f"Switch to {t.name}"))

    def switch_take(self, tid: str | None) -> str:
        """Ctrl+B: hear take `tid`; when it is already the one heard, the next take of its
        group. Returns the take now heard (the view selects it, so pressing again walks
        through the takes)."""
        if not tid:
            raise ActionError("select a take first (click its lane, or Up/Down)")
        t = self.session.track(tid)
        if not t.take_group:
            raise ActionError(f"{t.name} is not one of several takes")
        takes = self.session.takes(t.take_group)
        if self.session.take_active(t) and len(takes) > 1:
            t = takes[(takes.index(t) + 1) % len(takes)]
        self.activate_take(t.id)
        return t.id

    def add_bar_region(self, tid: str | None, position: float) -> Region:
        """Keyboard inpainting: a region of one bar (1 s without a tempo) from the bar of
        `position` (seconds) on lane `tid`."""
        if not tid:
            raise ActionError("select a lane first (click it, or Up/Down)")
        s = self.session
        if not s.tempo:
            start = float(position // 1.0)
            return self.add_region(tid, start, start + 1.0)
        start = s.bar_time(math.floor(s.bars_at(position) + 1e-9))
        return self.add_region(tid, start, start + s.seconds_per_bar())

    def use_as_context(self, tid: str) -> None:
        t = self.session.track(tid)
        cmds = [SetTrackAttr(self.session, tid, "role", "context"),
                SetTrackAttr(self.session, tid, "in_context", True)]
        self.stack.push(Macro(f"Use {t.name} as context", cmds))

    # ---- regions
    def _snap(self, a: float, b: float) -> tuple[float, float]:
        s = self.session
        if not s.tempo:
            return a, b
        # nothing before the session's zero (a pick-up bar before bar 1 starts there)
        sa, sb = max(s.snap(a), 0.0), s.snap(b)
        if sb - sa < 1e-6:  # keep at least one bar
            sa = s.snap(a - s.seconds_per_bar() / 2)
            if sa < 0:  # the session's first bar line
                sa = s.bar_time(math.ceil(s.bars_at(0.0) - 1e-9))
            sb = sa + s.seconds_per_bar()
        return sa, sb

    def add_region(self, tid: str, start: float, end: float) -> Region:
        t = self.session.track(tid)
        a, b = self._snap(start, end)  # then clipped: a pick-up bar before bar 1 keeps its end
        lo = max(0.0, t.offset / self.session.sample_rate)
        a, b = max(a, lo), min(b, t.end / self.session.sample_rate)
        if b - a <= 0.01:
            raise ActionError("the region lies outside this lane's audio")
        r = Region(a, b)
        self.stack.push(SetRegions(self.session, tid, [*t.regions, r], text="Draw region"))
        return r

    def move_region(self, tid: str, rid: str, start: float, end: float) -> None:
        t = self.session.track(tid)
        a, b = self._snap(max(0.0, start), end)
        if b - a <= 0.01:
            raise ActionError("a region must be longer than 10 ms")
        regions = [Region(a, b, r.id) if r.id == rid else r for r in t.regions]
        self.stack.push(SetRegions(self.session, tid, regions, text="Move region"))

    def delete_region(self, tid: str, rid: str) -> None:
        t = self.session.track(tid)
        self.stack.push(SetRegions(self.session, tid, [r for r in t.regions if r.id != rid],
                                   text="Delete region"))

    def set_loop(self, loop: tuple[float, float] | None) -> None:
        if loop is not None:
            a, b = self._snap(*loop)
            loop = (a, b) if b - a > 1e-3 else None
        if loop == self.session.loop:
            return
        self.stack.push(SetSessionAttr(self.session, "loop", loop,
                                       text="Clear loop" if loop is None else "Set loop"))

    def set_tempo(self, bpm: float | None) -> None:
        bpm = None if not bpm else round(float(bpm), 2)
        if bpm != self.session.tempo:
            self.stack.push(SetSessionAttr(self.session, "tempo", bpm, text="Set tempo"))

    def set_bar_start(self, seconds: float) -> None:
        """Where bar 1 begins: the bar lines, the snap and the beat grid the model gets all
        count from there (a clip whose first downbeat is not at the session's zero)."""
        if not math.isfinite(float(seconds)):
            raise ActionError("bar 1 needs a time in seconds")
        seconds = round(max(0.0, float(seconds)), 3)
        if seconds != self.session.bar_start:
            self.stack.push(SetSessionAttr(self.session, "bar_start", seconds,
                                           text="Set bar 1"))

    def set_meter(self, num: int, den: int) -> None:
        if (num, den) != tuple(self.session.meter):
            self.stack.push(SetSessionAttr(self.session, "meter", (num, den), text="Set meter"))

    def set_key(self, key: str | None) -> None:
        key = key or None
        if key != self.session.key:
            self.stack.push(SetSessionAttr(self.session, "key", key, text="Set key"))

    def tap_tempo(self, bpm: float) -> None:
        """A tempo from tapping: the taps of one burst are one undo step."""
        self.stack.push(SetSessionAttr(self.session, "tempo", round(bpm, 1), merge=True,
                                       text="Tap tempo"))

    def estimate_session_tempo(self) -> float:
        """Set the tempo estimated from the first minute of the context (raises ActionError
        when there is no context or no clear beat)."""
        tracks = self.context_tracks()
        if not tracks:
            raise ActionError("import a context clip first: the tempo is estimated from it")
        s = self.session
        mix = s.render(tracks, 0, min(s.seconds, 60.0), apply_mute=False)
        bpm = estimate_tempo(mix, s.sample_rate)
        if bpm is None:
            raise ActionError("could not estimate a tempo from this context (too short or no "
                              "clear beat)")
        self.set_tempo(bpm)
        return bpm

    # ---- the recipe (the panel's settings, saved with the session)
    def set_recipe_value(self, key: str, value: Any, merge: bool = False) -> None:
        """The musician changed one setting (`merge`: while a slider is dragged)."""
        self.stack.push(SetRecipeValue(self.session, key, value, merge))

    def set_recipe_defaults(self, changes: dict | Recipe) -> None:
        """Settings the app chooses rather than the musician: a fresh session's recipe (a
        whole `Recipe`), the seed drawn for a generation, the loaded model's guidance. They
        go through the session's setter, so every view follows, but make no undo step and
        leave the saved/unsaved state alone (a drawn seed is kept in each take's
        provenance)."""
        s = self.session
        new = changes if isinstance(changes, Recipe) else self.recipe.replace(**changes)
        if new == s.recipe:
            return
        dirty = s.dirty
        s.set_attr("recipe", new)
        s.dirty = dirty

    def draw_seed(self, rng: random.Random | None = None) -> int:
        """A fresh seed for the next generation, unless the seed is locked."""
        if self.recipe.seed_locked:
            return self.recipe.seed
        seed = (rng or random).randint(0, 2**31 - 1)
        self.set_recipe_defaults({"seed": seed})
        return seed

    def adopt_model_defaults(self, defaults: dict) -> dict:
        """Take the loaded bundle's guidance and steps wherever the recipe still holds the
        previous model's (or the app's) value: each model has the guidance that suits it,
        and what the musician set by hand stays. Returns what changed."""
        previous = self.model_defaults
        recipe = self.recipe
        changed = {k: v for k, v in defaults.items()
                   if k in previous and getattr(recipe, k) == previous[k]
                   and v != previous[k]}
        self.model_defaults = {**previous, **defaults}
        if changed:
            self.set_recipe_defaults(changed)
        return changed

    # ---- generation
    def _common(self, recipe: Recipe, reference: np.ndarray | None) -> dict:
        """The `GenerationRequest` fields every action shares, from the recipe (typed and
        range-checked already: `Recipe` holds only values the parameter table allows)."""
        prompt = recipe.prompt.strip() or None
        req = {
            "sample_rate": self.session.sample_rate,
            "prompt": prompt,
            "reference": reference,
            "mix": recipe.mix if (prompt and reference is not None) else None,
            "cfg_context": recipe.cfg_context,
            "cfg_clap": recipe.cfg_clap,
            "harmony": recipe.harmony if self.harmony_available else 0.0,
            "rhythm": recipe.rhythm if self.rhythm_available else 0.0,
            "steps": recipe.steps,
            "seed": recipe.seed,
            "takes": recipe.takes,
            "stereo_width": recipe.stereo_width,
        }
        if not recipe.text_prior:
            req["text_prior"] = False
        if recipe.loop_n > 1:
            req["loop"] = (recipe.loop_n, recipe.loop_frac)
        return req

    def beat_grid(self, start_s: float) -> tuple[float, float, float] | None:
        """The session's tempo map for audio that starts at `start_s` of the session:
        (BPM, quarter notes per bar, a bar line relative to that start), or None without a
        tempo. Bars count from the session's bar 1 (`Session.bar_start`)."""
        s = self.session
        if not s.tempo:
            return None
        num, den = s.meter
        try:  # the grid's own checks: a tempo the model cannot take sends none
            g = BeatGrid(float(s.tempo), num * 4.0 / den,
                         float(s.bar_start) - float(start_s) + 0.0)  # + 0.0: never -0.0
        except ValueError:
            return None
        return g.bpm, g.bar_beats, g.downbeat

    def reference_audio(self, recipe: Recipe) -> np.ndarray | None:
        tid = recipe.reference_track
        if tid:
            try:
                return self.session.track(tid).audio
            except KeyError:
                return None
        return None

    def context_tracks(self, exclude: str | None = None) -> list[Track]:
        s = self.session
        return [t for t in s.tracks if t.in_context and t.role != "reference"
                and s.take_active(t) and t.id != exclude]

    def _context(self, start: float, end: float, exclude: str | None = None):
        tracks = self.context_tracks(exclude)
        if not tracks:
            return None, {"tracks": [], "start": start, "end": end}
        mix = ContextMix(self.session, tuple(tracks), start, end)
        return mix, {"tracks": [t.id for t in tracks], "start": start, "end": end}

    def generate_span(self, recipe: Recipe) -> tuple[float, float, str]:
        """What Generate covers, and why: the loop region, else the whole context, else the
        panel's Length. The panel shows the reason; provenance records the real length."""
        s = self.session
        if s.loop:
            return s.loop[0], s.loop[1], "loop"
        if self.context_tracks():
            return 0.0, s.seconds, "context"
        return 0.0, recipe.duration, "length"

    def length_rule(self, recipe: Recipe) -> str:
        """One line for the panel under Length: which length Generate will use."""
        a, b, why = self.generate_span(recipe)
        if why == "loop":
            return f"Generate fills the loop region ({b - a:.2f} s); Continue adds Length"
        if why == "context":
            return f"Generate follows the context ({b - a:.2f} s); Continue adds Length"
        return "Generate makes this length (no context, no loop region)"

    def find_track(self, tid: str | None) -> Track | None:
        """The lane `tid`, or None when nothing is selected or the lane went (an undo can
        remove it before the selection follows)."""
        try:
            return self.session.track(tid) if tid else None
        except KeyError:
            return None

    def job_for_action(self, action: str, selected: str | None = None,
                       region: str | None = None, busy: bool = False) -> Job | None:
        """What a generation action does with lane `selected` (and its region `region`):
        the `Job` to run, or None for an action that is an edit done at once (Use as
        context, Use as audio reference). A fresh seed is drawn unless it is locked;
        Regenerate keeps its take's. Raises ActionError when the action cannot run."""
        if action == "use_context":
            if not selected:
                raise ActionError("select a generated take first")
            self.use_as_context(selected)
            return None
        if action == "use_reference":
            self.set_recipe_value("reference_track", selected)
            return None
        if busy:
            raise ActionError("a generation is already running (Esc cancels it)")
        if action == "regenerate":
            job = self.regenerate_job(self.selected_track(selected).id)
        else:
            self.draw_seed()  # a fresh seed per generation unless it is locked
            job = self.build_job(action, self.recipe, selected, region)
        job.recipe = self.recipe
        return job

    def selected_track(self, tid: str | None) -> Track:
        if not tid:
            raise ActionError("select a lane first (click its header)")
        return self.session.track(tid)

    def build_job(self, action: str, recipe: Recipe, selected: str | None = None,
                  selected_region: str | None = None, reference: np.ndarray | None = None
                  ) -> Job:
        """Translate an action + panel settings into a Job (raises ActionError)."""
        s = self.session
        sr = s.sample_rate
        ref = reference if reference is not None else self.reference_audio(recipe)
        req = self._common(recipe, ref)
        label = req["prompt"] or ("reference" if ref is not None else "stem")
        if action in ("generate", "arrange"):
            start, end, _why = self.generate_span(recipe)
            ctx, spec = self._context(start, end)
            req["context"] = ctx
            req["duration"] = end - start
            req["beat_grid"] = self.beat_grid(start)
            return Job(action, req, label, int(round(start * sr)), context_spec=spec,
                       recipe=recipe, takes=recipe.takes)
        t = self.selected_track(selected)
        join = t.take_group if t.role == "generated" and t.take_group else None
        job = self._build_derived(action, recipe, req, t, selected_region)
        job.join_group = join
        job.recipe, job.takes = recipe, recipe.takes
        return job

    def _build_derived(self, action: str, recipe: Recipe, req: dict, t: Track,
                       selected_region: str | None) -> Job:
        """Inpaint, Vary and Continue of lane `t`."""
        sr = self.session.sample_rate
        start_s = t.offset / sr
        end_s = t.end / sr
        if action == "inpaint":
            regions = t.regions
            if not regions:
                raise ActionError(f"draw a region on {t.name} first (drag across its waveform)")
            r = next((r for r in regions if r.id == selected_region), regions[-1])
            ctx, spec = self._context(start_s, end_s, exclude=t.id)
            req.update(context=ctx, source=t.audio, beat_grid=self.beat_grid(start_s),
                       inpaint=(max(0.0, r.start - start_s), min(end_s, r.end) - start_s))
            spec["region"] = [r.start, r.end]
            return Job(action, req, f"{t.name} inpaint", t.offset, t.id, spec)
        if action == "vary":
            ctx, spec = self._context(start_s, end_s, exclude=t.id)
            req.update(context=ctx, variation_of=t.audio, strength=recipe.strength,
                       beat_grid=self.beat_grid(start_s))
            return Job(action, req, f"{t.name} var", t.offset, t.id, spec)
        if action == "continue":
            extra = recipe.duration
            req.update(continue_from=t.audio, duration=extra)
            return Job(action, req, f"{t.name} cont", t.offset, t.id,
                       {"tracks": [], "start": start_s, "end": end_s + extra})
        raise ActionError(f"unknown action {action}")

    def regenerate_job(self, tid: str) -> Job:
        """The same recipe again: rebuilt from the stem's provenance, same seed, one take."""
        t = self.session.track(tid)
        p = t.provenance or {}
        app = p.get("app") or {}
        if not app.get("recipe"):
            raise ActionError(f"{t.name} has no recipe to regenerate from")
        # provenance is a file's data: its recipe is read leniently, for one take
        recipe = Recipe.from_dict({**app["recipe"], "takes": 1}, where=f"{t.name} provenance")
        action = app.get("action", "generate")
        if action in ("generate", "arrange"):
            job = self._regenerate_over_context(t, app, recipe)
        else:
            job = self._regenerate_from_source(t, app, recipe, action)
        if "seed" in p:  # the take's own seed, exactly (take k of a batch drew seed + k,
            job.request["seed"] = int(p["seed"])  # which may lie past the panel's range)
        job.action, job.record_action = "regenerate", action
        job.name, job.join_group = take_base(t.name), t.take_group
        return job

    def _regenerate_over_context(self, t: Track, app: dict, recipe: Recipe) -> Job:
        """Generate or Arrange again over the lanes the take heard (all still there)."""
        spec = app.get("context", {})
        wanted = set(spec.get("tracks", []))
        tracks = [x for x in self.session.tracks if x.id in wanted]
        if wanted - {x.id for x in tracks}:
            raise ActionError("a context lane this take was made from has been deleted")
        start, end = spec.get("start", 0.0), spec.get("end", t.frames / self.session.sample_rate)
        req = self._common(recipe, self.reference_audio(recipe))
        req["context"] = ContextMix(self.session, tuple(tracks), start, end) if tracks else None
        req["duration"] = end - start
        req["beat_grid"] = self.beat_grid(start)
        if app.get("prompt_override"):
            req["prompt"] = app["prompt_override"]
        return Job("regenerate", req, take_base(t.name), t.offset, None, spec, recipe,
                   takes=recipe.takes)

    def _regenerate_from_source(self, t: Track, app: dict, recipe: Recipe, action: str) -> Job:
        """Inpaint, Vary or Continue again from the lane the take was made from."""
        src = app.get("source_track")
        if not src:
            raise ActionError(f"{t.name} cannot be regenerated")
        source = self.find_track(src)
        if source is None:
            raise ActionError("the lane this take was made from has been deleted")
        job = self.build_job(action, recipe, src, None)
        spec = app.get("context", {})
        if action == "inpaint" and spec.get("region"):
            a, b = spec["region"]
            off = source.offset / self.session.sample_rate
            job.request["inpaint"] = (a - off, b - off)
            job.context_spec = spec
        return job

    def land_results(self, job: Job, stems: list, recipe: Recipe) -> list[Track]:
        """Add the stems as takes (one undo step); the first new take is the one heard.

        Takes of something derived from a take (Vary, Inpaint, Continue, Regenerate) join
        that take's group, as a new take joins a Logic take folder: A/B then chooses among
        all of them, and the export mixes only the one you hear. Names are the part's name
        and a take number that goes on across generations ("bass take3"), never repeated."""
        s = self.session
        group = job.join_group if job.join_group and s.takes(job.join_group) else None
        if group:
            base = take_base(s.takes(group)[0].name)
            first_take = max((t.take or 0) for t in s.takes(group)) + 1
        else:
            group = uuid.uuid4().hex[:8]
            base = job.name
            first_take = 1
        tracks = self._take_tracks(job, stems, recipe, base, next_take_number(s, base),
                                   group, first_take)
        if tracks:
            self.stack.push(AddTracks(tracks, text=f"{job.action.capitalize()}: {job.name}",
                                      active_takes={group: tracks[0].id}))
        return tracks

    def land_arrangement(self, job: Job, stems: list, recipe: Recipe) -> list[Track]:
        """An arrangement's stems as one lane per part, in part order (one undo step).

        Each part is its own take group named after its prompt, and joins the context, as
        the engine generated every part over the context and the parts before it; its
        recorded context names those lanes too, so Regenerate hears what the part heard."""
        stems = sorted(stems, key=lambda st: st.provenance["arrangement"]["part"])
        tracks: list[Track] = []
        numbers: dict[str, int] = {}
        for st in stems:
            part = st.provenance["arrangement"]
            prompt = part["value"] if part["kind"] == "prompt" else None
            name = prompt or Path(part["value"]).stem
            number = numbers.get(name) or next_take_number(self.session, name)
            numbers[name] = number + 1
            spec = {**job.context_spec, "tracks": [*job.context_spec.get("tracks", []),
                                                   *(t.id for t in tracks)]}
            part_job = Job(job.action, {**job.request, "prompt": prompt}, name, job.offset,
                           context_spec=spec)
            (t,) = self._take_tracks(part_job, [st], recipe, name, number,
                                     uuid.uuid4().hex[:8], 1)
            t.role, t.in_context = "context", True
            tracks.append(t)
        if tracks:
            self.stack.push(AddTracks(tracks, text=f"Arrange: {job.name}",
                                      active_takes={t.take_group: t.id for t in tracks}))
        return tracks

    def _take_tracks(self, job: Job, stems: list, recipe: Recipe, base: str, number: int,
                     group: str, first_take: int) -> list[Track]:
        """New lanes for `stems` (not yet in the session): resampled to the session's rate,
        named '<base> take<number + i>', with the app's provenance beside the engine's."""
        recipe = recipe.to_dict()
        if (job.record_action or job.action) in ("generate", "arrange") and \
                job.request.get("duration"):
            # Length is not what Generate used over a context or loop: record what it did
            recipe["duration"] = round(float(job.request["duration"]), 6)
        tracks = []
        for i, st in enumerate(stems):
            audio = np.asarray(st.audio, np.float32)
            if st.sample_rate != self.session.sample_rate:
                from engine.audio import resample

                audio = resample(audio, st.sample_rate, self.session.sample_rate)
            prov = dict(st.provenance or {})
            prov["app"] = {
                "action": job.record_action or job.action,
                "recipe": recipe,
                "context": job.context_spec,
                "source_track": job.source_track,
                "offset_frames": job.offset,
                "prompt_override": job.request.get("prompt") if job.action == "arrange" else None,
            }
            t = track_from_audio(f"{base} take{number + i}", audio, role="generated",
                                 offset=job.offset)
            t.provenance = prov
            t.in_context = False
            t.take_group = group
            t.take = first_take + i
            tracks.append(t)
        return tracks


_TAKE_RE = re.compile(r"^(.*?) take(\d+)$")


def take_base(name: str) -> str:
    """'funky bass take12' -> 'funky bass' (a name without a take number stays)."""
    m = _TAKE_RE.match(name)
    return m.group(1) if m else name


def next_take_number(session: Session, base: str) -> int:
    """The first take number not yet used by a lane named '<base> take<N>'."""
    used = [int(m.group(2)) for t in session.tracks
            if (m := _TAKE_RE.match(t.name)) and m.group(1) == base]
    return max(used, default=0) + 1


# how much of a job each phase takes (sampling dominates; the stereo pass is a second
# sampling run; decoding is short): one bar and one ETA for the whole job
_PHASES = (("prepare", 0.01), ("encode", 0.03), ("condition", 0.01), ("sample", 1.0),
           ("stereo", 1.0), ("decode", 0.12))


def job_fraction(stage: str, frac: float, stereo: bool) -> float:
    """How far a whole generation is, from the engine's (stage, fraction of that stage)."""
    phases = [(n, w) for n, w in _PHASES if stereo or n != "stereo"]
    total = sum(w for _, w in phases)
    if stage == "done":
        return 1.0
    done = 0.0
    for name, w in phases:
        if name == stage:
            return min(1.0, (done + w * min(max(frac, 0.0), 1.0)) / total)
        done += w
    return 0.0


def _fmt_num(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _header_line(prov: dict, par: dict, app: dict, action: str) -> str:
    model = prov.get("model") or {}
    name, digest = _esc(str(model.get("name"))), _esc(str(model.get("hash", ""))[:12])
    return (f"<b>{_esc(action.capitalize())}</b> with the model <b>{name}</b> (hash {digest})"
            f" on {_esc(str(prov.get('device')))}, {_esc(str(prov.get('created', '')))}")


def _prompt_line(prov, par, app, action) -> str:
    prompt = par.get("prompt")
    return f"Prompt: <b>“{_esc(prompt)}”</b>" if prompt else "Prompt: none"


def _text_prior_line(prov, par, app, action) -> str | None:
    return "The prompt was matched to the model's instruments (text prior)" \
        if par.get("text_prior") else None


def _reference_line(prov, par, app, action) -> str | None:
    ref = (prov.get("inputs") or {}).get("reference")
    if ref is None:
        return None
    mix = f", r = {_fmt_num(par['mix'])}" if par.get("mix") is not None else ""
    return f"Audio reference: {_esc(str(ref.get('label') or 'a lane'))}{mix}"


def _context_line(prov, par, app, action) -> str | None:
    ctx = app.get("context") or {}
    if ctx.get("tracks"):
        return (f"Context: {len(ctx['tracks'])} lane(s), {_fmt_num(ctx.get('start', 0))}"
                f"–{_fmt_num(round(ctx.get('end', 0), 3))} s")
    return None if "context" in (prov.get("inputs") or {}) else "Context: none"


def _grid_line(prov, par, app, action) -> str | None:
    grid = prov.get("beat_grid")
    if not isinstance(grid, dict) or grid.get("bpm") is None:
        return None
    how = "followed" if grid.get("used") else "not used: this model has no beat grid"
    # where the take's first bar line falls (the grid's bar line is any of them)
    bar_s = float(grid.get("bar_beats", 4.0)) * 60.0 / float(grid["bpm"])
    first = round(float(grid.get("downbeat") or 0.0) % bar_s, 3)
    on_bar = first < 1e-3 or bar_s - first < 1e-3
    at = "" if on_bar else f", the first bar line {_fmt_num(first)} s in"
    return (f"Beat grid: {_fmt_num(grid['bpm'])} BPM, bars of "
            f"{_fmt_num(grid.get('bar_beats', 4.0))} beats{at} ({how})")


def _region_line(prov, par, app, action) -> str | None:
    if not par.get("inpaint"):
        return None
    a, b = par["inpaint"]
    return (f"Region redrawn: {_fmt_num(round(a, 3))}–{_fmt_num(round(b, 3))} s "
            "of the source (outside it, the source sample for sample)")


def _strength_line(prov, par, app, action) -> str | None:
    return f"Variation strength: {_fmt_num(par.get('strength'))}" \
        if action in ("vary", "variation") else None


def _seed_line(prov, par, app, action) -> str:
    return (f"Seed <b>{prov.get('seed')}</b> (take {int(prov.get('take', 0)) + 1} of "
            f"{prov.get('takes_in_batch', 1)}; the same seed gives the same take)")


def _guidance_line(prov, par, app, action) -> str:
    steer = "".join(f", {k} {_fmt_num(par[k])}" for k in ("harmony", "rhythm") if par.get(k))
    return (f"Guidance: context {_fmt_num(par.get('cfg_context'))}, prompt "
            f"{_fmt_num(par.get('cfg_clap'))}{steer}; {par.get('steps')} steps "
            f"({par.get('sampler', 'heun')})")


def _stereo_line(prov, par, app, action) -> str:
    sw = par.get("stereo_width") or 0
    return f"Stereo width {_fmt_num(sw)}" if sw else "Mono"


def _loop_line(prov, par, app, action) -> str | None:
    if not par.get("loop"):
        return None
    n, f = par["loop"]
    return f"Loop: {n} repetitions, s_loop {_fmt_num(f)}"


def _length_line(prov, par, app, action) -> str | None:
    if action not in ("generate", "arrange"):
        return None
    dur = (app.get("recipe") or {}).get("duration")
    return f"Length: {_fmt_num(dur)} s" if dur else None


# the lines of a take's recipe, in order: each gets (provenance, its parameters, the app's
# record, the action) and returns its line, or None when it has nothing to say
_RECIPE_LINES = (_header_line, _prompt_line, _text_prior_line, _reference_line, _context_line,
                 _grid_line, _region_line, _strength_line, _seed_line, _guidance_line, _stereo_line,
                 _loop_line, _length_line)


def recipe_lines(prov: dict) -> list[str]:
    """A take's provenance as a recipe a musician reads (HTML lines, escaped)."""
    par = prov.get("parameters") or {}
    app = prov.get("app") or {}
    action = app.get("action") or par.get("mode") or "generate"
    lines = (line(prov, par, app, action) for line in _RECIPE_LINES)
    return [x for x in lines if x is not None]


_AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
# the audio a mode starts from: its flag, the provenance input and a file name to export to
_SOURCE_INPUTS = {"variation": ("--variation-of", "variation_of", "source.wav"),
                  "continue": ("--continue", "continue_from", "clip.wav")}
# the parameter options, in the order the command lists them, and the modes each applies to
# (None: every mode); the flags are the parameter table's (engine.params)
_PARAM_OPTIONS = (("duration", ("single", "continue", None)), ("loop", None),
                  ("strength", ("variation", "regenerate")), ("cfg_context", None),
                  ("cfg_clap", None), ("harmony", None), ("rhythm", None),
                  ("steps", None))


def _file_of(inputs: dict, name: str, fallback: str) -> str:
    """The file an input came from, or the file to export it to (audio the app mixed)."""
    label = (inputs.get(name) or {}).get("label")
    return label if label and label.lower().endswith(_AUDIO_SUFFIXES) else fallback


def _input_args(par: dict, inputs: dict, mode: str | None) -> list[str]:
    """The audio inputs, the prompt and the reference."""
    args = ["--context", _file_of(inputs, "context", "context.wav")] if "context" in inputs \
        else []
    if mode in _SOURCE_INPUTS:
        flag, name, fallback = _SOURCE_INPUTS[mode]
        args += [flag, _file_of(inputs, name, fallback)]
    elif mode in ("inpaint", "regenerate"):
        a, b = par.get("inpaint") or (0, 0)
        args += [f"--{mode}", f"{round(a, 3):g}:{round(b, 3):g}",
                 "--source", _file_of(inputs, "source", "source.wav")]
    if par.get("prompt"):
        args += ["--prompt", par["prompt"]]
    if "reference" in inputs:
        args += ["--reference", _file_of(inputs, "reference", "reference.wav")]
        if par.get("mix") is not None:
            args += [PARAMS["mix"].flag, _fmt_num(par["mix"])]
    return args


def _param_args(par: dict, mode: str | None) -> list[str]:
    """The generation parameters the take was made with, by the table's flags."""
    args = []
    for name, modes in _PARAM_OPTIONS:
        value = par.get(name)
        if value is None or (modes is not None and mode not in modes):
            continue
        if name == "loop":  # loop_n and loop_frac travel as one option, N:FRACTION
            args += ["--loop", f"{value[0]}:{_fmt_num(value[1])}"]
        else:
            args += [PARAMS[name].flag, _fmt_num(value)]
    if par.get("prompt") and par.get("text_prior") is False:
        args += ["--no-text-prior"]
    return args + [PARAMS["stereo_width"].flag, _fmt_num(par.get("stereo_width") or 0)]


def _grid_args(grid: dict | None) -> list[str]:
    """--tempo/--meter/--downbeat of the beat grid a take was given (the bar as N/4, N/8 or
    N/16: the same grid whatever the session's meter was written as)."""
    if not isinstance(grid, dict) or grid.get("bpm") is None:
        return []
    bar = float(grid.get("bar_beats", 4.0))
    den = next((d for d in (4, 8, 16) if abs(bar * d / 4 - round(bar * d / 4)) < 1e-6), 16)
    return ["--tempo", _fmt_num(grid["bpm"]), "--meter", f"{round(bar * den / 4)}/{den}",
            "--downbeat", _fmt_num(grid.get("downbeat", 0.0))]


def command_line(prov: dict, track: Track | None = None) -> str:
    """The `riffwright generate` command that makes this take again. Audio the app mixed
    from lanes (the context, the source of an inpaint) has no file: the command names a
    file to export it to (File › Export selected stem)."""
    par = prov.get("parameters") or {}
    mode = par.get("mode")
    args = ["riffwright", "generate", *_input_args(par, prov.get("inputs") or {}, mode),
            *_param_args(par, mode), *_grid_args(prov.get("beat_grid")),
            PARAMS["seed"].flag, str(prov.get("seed", 0))]
    model = (prov.get("model") or {}).get("path")
    if model:
        args += ["--model", model]
    return shlex.join(str(a) for a in args + ["--out", "takes/"])


def import_files(paths: list[str | Path], sample_rate: int) -> tuple[list, list[str]]:
    """Read audio files resampled to the session rate: ([(name, audio, path)], [errors])."""
    from engine.audio import SUPPORTED_EXTENSIONS, load_audio

    ok, errors = [], []
    for p in paths:
        p = Path(p)
        if p.suffix.lower() not in SUPPORTED_EXTENSIONS:
            errors.append(f"{p.name}: unsupported file type {p.suffix or '(none)'} — use WAV, "
                          "FLAC, AIFF, OGG or MP3")
            continue
        try:
            audio, _sr = load_audio(p, sample_rate=sample_rate)
        except RiffwrightError as e:
            errors.append(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - any decoder failure becomes a message
            errors.append(f"{p.name}: cannot read this file ({e.__class__.__name__})")
            continue
        ok.append((p.stem, audio, str(p)))
    return ok, errors


def import_files_with_peaks(paths: list[str | Path], sample_rate: int):
    """`import_files` plus each file's peak pyramid: everything slow, for a worker thread."""
    from engine.document.session import PeakPyramid, compute_peaks

    ok, errors = import_files(paths, sample_rate)
    return ok, errors, [PeakPyramid(compute_peaks(a)) for _, a, _ in ok]
