"""Every command of the window, as data: the `Action` enum and its table of label, shortcut
and help text.

The window builds its menus and toolbar buttons from `ACTIONS`, and Help › Keyboard shortcuts
lists the same table, so a shortcut can neither be missing from the help nor listed without
existing. The lanes and the panel name the generation actions by their value ("inpaint"…),
which `Action(value)` turns back into a member; an unknown name is an error, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from PySide6.QtGui import QKeySequence

if TYPE_CHECKING:
    from engine.document.session import Track

StandardKey = QKeySequence.StandardKey


class Action(StrEnum):
    NEW = "new"
    OPEN = "open"
    SAVE = "save"
    SAVE_AS = "save_as"
    IMPORT = "import"
    EXPORT = "export"
    EXPORT_SELECTED = "export_selected"
    EXPORT_DAW = "export_daw"
    ALL_TAKES = "all_takes"
    QUIT = "quit"
    UNDO = "undo"
    REDO = "redo"
    DELETE = "delete"
    REGION_HERE = "region_here"
    NEXT_TAKE = "next_take"
    GENERATE = "generate"
    INPAINT = "inpaint"
    VARY = "vary"
    CONTINUE = "continue"
    REGENERATE = "regenerate"
    USE_CONTEXT = "use_context"
    ARRANGE = "arrange"
    USE_REFERENCE = "use_reference"
    CANCEL = "cancel"
    MODELS = "models"
    PLAY = "play"
    STOP = "stop"
    HOME = "home"
    LOOP = "loop"
    TAP = "tap"
    BAR_ONE = "bar_one"
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    FIT = "fit"
    LANES = "lanes"
    PROMPT = "prompt"
    SHORTCUTS = "shortcuts"
    ABOUT = "about"


@dataclass(frozen=True)
class ActionSpec:
    """How one action appears: menu text, key, tooltip, toolbar text, a check box or not."""

    text: str
    shortcut: str | StandardKey | None = None
    tip: str = ""
    icon_text: str = ""
    checkable: bool = False


ACTIONS: dict[Action, ActionSpec] = {
    Action.NEW: ActionSpec("&New session", StandardKey.New),
    Action.OPEN: ActionSpec("&Open session…", StandardKey.Open),
    Action.SAVE: ActionSpec("&Save", StandardKey.Save),
    Action.SAVE_AS: ActionSpec("Save &as…", StandardKey.SaveAs),
    Action.IMPORT: ActionSpec("&Import audio…", "Ctrl+I", "Import audio files as context lanes"),
    Action.EXPORT: ActionSpec("&Export stems and mix…", "Ctrl+E",
                              "All stems and the mix as 24-bit WAV, aligned to zero"),
    Action.EXPORT_SELECTED: ActionSpec("Export &selected stem…", "Ctrl+Shift+E"),
    Action.EXPORT_DAW: ActionSpec("Export &DAWproject…", "Ctrl+Alt+E",
                                  "For Bitwig, Studio One, Cubase"),
    Action.ALL_TAKES: ActionSpec(
        "Exports include every take", None,
        "Off: the mix holds the take you hear of each part, and the DAWproject mutes the "
        "others. On: every take is mixed and unmuted.", checkable=True),
    Action.QUIT: ActionSpec("&Quit", StandardKey.Quit),
    Action.UNDO: ActionSpec("&Undo", StandardKey.Undo),
    Action.REDO: ActionSpec("&Redo", "Ctrl+Shift+Z"),
    Action.DELETE: ActionSpec("&Delete region / lane", StandardKey.Delete),
    Action.REGION_HERE: ActionSpec(
        "Add inpaint &region at playhead", "Ctrl+Shift+R",
        "A region of one bar (1 s without a tempo) on the selected lane, from the playhead"),
    Action.NEXT_TAKE: ActionSpec("Switch &take (A/B)", "Ctrl+B",
                                 "Hear the selected take, or the next take of its group"),
    Action.GENERATE: ActionSpec("&Generate", "Ctrl+G"),
    Action.INPAINT: ActionSpec("&Inpaint region", "Ctrl+R"),
    Action.VARY: ActionSpec("&Vary", "Ctrl+Shift+V"),
    Action.CONTINUE: ActionSpec("&Continue", "Ctrl+Shift+C"),
    Action.REGENERATE: ActionSpec("Re&generate (same recipe)", "Ctrl+Shift+G"),
    Action.USE_CONTEXT: ActionSpec("&Use as context", "Ctrl+U"),
    Action.ARRANGE: ActionSpec("&Arrange…", "Ctrl+Shift+A"),
    Action.USE_REFERENCE: ActionSpec("Use as audio &reference", None,
                                     "The selected lane becomes the audio reference"),
    Action.CANCEL: ActionSpec("Cancel generation", "Escape"),
    Action.MODELS: ActionSpec("&Models…", "Ctrl+M",
                              "See, add and remove model bundles; pick the one to use"),
    Action.PLAY: ActionSpec("Play / pause", "Space", "Play or pause (Space)", "▶"),
    Action.STOP: ActionSpec("Stop", "Return", "Stop and return (Enter)", "■"),
    Action.HOME: ActionSpec("Go to start", "Home"),
    Action.LOOP: ActionSpec("Loop playback", "L", "Loop the loop region (L)", "⟲ Loop",
                            checkable=True),
    Action.TAP: ActionSpec("Tap tempo", "T", "Tap the beat to set the tempo (T)", "Tap"),
    Action.BAR_ONE: ActionSpec("&Bar 1 at the playhead", "Ctrl+Shift+B",
                               "The bar lines and the model's beat grid count from the playhead"),
    Action.ZOOM_IN: ActionSpec("Zoom in", "Ctrl++", icon_text="+"),
    Action.ZOOM_OUT: ActionSpec("Zoom out", "Ctrl+-", icon_text="−"),
    Action.FIT: ActionSpec("Zoom to fit", "Ctrl+0", icon_text="Fit"),
    Action.LANES: ActionSpec("Focus the lanes", "Ctrl+1"),
    Action.PROMPT: ActionSpec("Edit the &prompt", "Ctrl+P"),
    Action.SHORTCUTS: ActionSpec("Keyboard shortcuts", "F1"),
    Action.ABOUT: ActionSpec("&About Riffwright"),
}

# the actions that start (or prepare) a generation, in the order of the Generate menu
GENERATION_ACTIONS = (Action.GENERATE, Action.INPAINT, Action.VARY, Action.CONTINUE,
                      Action.REGENERATE, Action.USE_CONTEXT, Action.ARRANGE)

# keys the lanes handle themselves (no menu item), listed after the table in the help
LANE_KEYS = [("Select the lane above / below (lanes focused)", "Up / Down"),
             ("Playhead one bar back / on (lanes focused)", "Left / Right"),
             ("Scroll lanes / scroll in time / zoom", "Wheel / Shift+Wheel / Ctrl+Wheel"),
             ("Rename a lane", "double-click its name"),
             ("Leave a text or number field", "Enter or Esc")]


def key_sequence(spec: ActionSpec) -> QKeySequence:
    return QKeySequence(spec.shortcut) if spec.shortcut is not None else QKeySequence()


def label(spec: ActionSpec) -> str:
    """The menu text without its mnemonic and without a parenthesised remark."""
    return spec.text.replace("&", "").split(" (")[0]


def shortcut_rows() -> list[tuple[str, str]]:
    """(what, keys) for every action that has a shortcut, then the lanes' own keys."""
    rows = []
    for spec in ACTIONS.values():
        seq = key_sequence(spec)
        if not seq.isEmpty():
            rows.append((label(spec), seq.toString(QKeySequence.NativeText)))
    return rows + LANE_KEYS


def action_states(busy: bool, track: Track | None) -> dict[Action, bool]:
    """Which selection-dependent actions are enabled, given whether a generation runs and
    the selected lane (None: nothing selected). Generating needs the engine free; Inpaint a
    region on the lane; Regenerate a recipe to regenerate from; Use as context a take."""
    free, sel = not busy, track is not None
    return {
        Action.GENERATE: free,
        Action.ARRANGE: free,
        Action.INPAINT: free and sel and bool(track.regions),
        Action.VARY: free and sel,
        Action.CONTINUE: free and sel,
        Action.REGENERATE: free and sel and bool(track.provenance),
        Action.USE_CONTEXT: sel and track.role == "generated",
        Action.USE_REFERENCE: sel,
        Action.EXPORT_SELECTED: sel,
    }
