"""The window's QActions and menus, built from the `Action` table (app/actions.py).

`build_actions` makes one window-wide QAction per row of the table and connects it to its slot
(`window_slots`: which of the window's command objects runs it); `build_menus` lays them out
as `MENUS` says; `fill_recent` refills File › Open recent. `TransportKeys` lets the transport
and edit keys through number boxes, as in a DAW.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QAbstractSpinBox, QMenu, QMenuBar, QWidget

from app.actions import ACTIONS, GENERATION_ACTIONS, Action, key_sequence

RECENT = "recent"  # File › Open recent (a submenu)
DOCK = "dock"  # View › the panel's show/hide toggle

# (menu title, items): an Action, None for a separator, or RECENT / DOCK
MENUS = (
    ("&File", (Action.NEW, Action.OPEN, RECENT, None, Action.SAVE, Action.SAVE_AS, None,
               Action.IMPORT, None, Action.EXPORT, Action.EXPORT_SELECTED,
               Action.EXPORT_DAW, Action.ALL_TAKES, None, Action.QUIT)),
    ("&Edit", (Action.UNDO, Action.REDO, None, Action.DELETE, Action.REGION_HERE,
               Action.NEXT_TAKE)),
    ("&Generate", (*GENERATION_ACTIONS, Action.USE_REFERENCE, None, Action.CANCEL, None,
                   Action.MODELS)),
    ("&Transport", (Action.PLAY, Action.STOP, Action.HOME, Action.LOOP, Action.TAP,
                    Action.BAR_ONE)),
    ("&View", (Action.ZOOM_IN, Action.ZOOM_OUT, Action.FIT, None, Action.LANES,
               Action.PROMPT, DOCK)),
    ("&Help", (Action.SHORTCUTS, Action.ABOUT)),
)


def build_actions(parent: QWidget, slots: dict[Action, Callable[[], object]]
                  ) -> dict[Action, QAction]:
    """One QAction per row of the actions table, its shortcut window-wide, added to
    `parent` and triggering `slots[action]`; every action needs a slot."""
    act: dict[Action, QAction] = {}
    for name, spec in ACTIONS.items():
        a = QAction(spec.text, parent)
        if spec.shortcut is not None:
            a.setShortcut(key_sequence(spec))
            a.setShortcutContext(Qt.WindowShortcut)
        if spec.tip:
            a.setToolTip(spec.tip)
            a.setStatusTip(spec.tip)
        if spec.icon_text:
            a.setIconText(spec.icon_text)
        a.setCheckable(spec.checkable)
        a.triggered.connect(lambda _c=False, slot=slots[name]: slot())
        parent.addAction(a)
        act[name] = a
    return act


def build_menus(bar: QMenuBar, act: dict[Action, QAction], dock_toggle: QAction) -> QMenu:
    """The menu bar as `MENUS` lays it out; returns File › Open recent (filled later)."""
    recent = None
    for title, items in MENUS:
        m = bar.addMenu(title)
        for item in items:
            if item is None:
                m.addSeparator()
            elif item == RECENT:
                recent = m.addMenu("Open &recent")
            elif item == DOCK:
                m.addAction(dock_toggle)
            else:
                m.addAction(act[item])
    return recent


def fill_recent(menu: QMenu, paths: list[str], open_one: Callable[[str], object]) -> None:
    """File › Open recent: one item per session folder (its full path as the tooltip)."""
    menu.clear()
    for p in paths:
        menu.addAction(Path(p).name, lambda p=p: open_one(p)).setToolTip(p)
    menu.setEnabled(bool(paths))


def window_slots(w) -> dict[Action, object]:
    """What each action does: the menus' command objects, the transport, the lanes, and
    `run_action` for the generation actions."""
    T, L, E, S, X, D = w.transport, w.lanes, w.edits, w.sessions, w.exports, w.dialogs
    slots = {
        Action.NEW: S.new_session, Action.OPEN: S.open_dialog, Action.SAVE: S.save,
        Action.SAVE_AS: S.save_as_dialog, Action.IMPORT: S.import_dialog,
        Action.EXPORT: lambda: X.export_dialog(False),
        Action.EXPORT_SELECTED: lambda: X.export_dialog(True),
        Action.EXPORT_DAW: X.export_daw_dialog,
        Action.ALL_TAKES: lambda: w.settings.setValue(
            "export_all_takes", w.act[Action.ALL_TAKES].isChecked()),
        Action.QUIT: w.close, Action.UNDO: E.undo, Action.REDO: E.redo,
        Action.DELETE: E.delete_selected, Action.REGION_HERE: E.region_at_playhead,
        Action.NEXT_TAKE: E.switch_take, Action.CANCEL: w.cancel_generation,
        Action.MODELS: lambda: D.models(w.choose_model), Action.PLAY: T.toggle,
        Action.STOP: T.stop, Action.HOME: lambda: T.seek(0.0),
        Action.LOOP: lambda: T.set_loop_enabled(w.act[Action.LOOP].isChecked()),
        Action.TAP: E.tap, Action.BAR_ONE: E.bar_one_here, Action.ZOOM_IN: lambda: L.zoom(0.5),
        Action.ZOOM_OUT: lambda: L.zoom(2.0), Action.FIT: L.fit,
        Action.LANES: w.focus_lanes, Action.PROMPT: w.focus_prompt,
        Action.SHORTCUTS: D.shortcuts, Action.ABOUT: D.about,
    }
    for a in (*GENERATION_ACTIONS, Action.USE_REFERENCE):
        slots[a] = lambda a=a: w.run_action(a)
    return slots


class TransportKeys(QObject):
    """Event filter for number boxes and lists (tempo, meter, key, steps, seed…): their
    editors would swallow Space (blanking the tempo) and Ctrl+Z; in every DAW those keys
    reach the transport and the edit menu. Enter commits the value and hands the keyboard
    back to the lanes, as Ableton's and Bitwig's number fields do."""

    def __init__(self, window: QWidget, commit: Callable[[], None]):
        super().__init__(window)
        self.commit = commit  # Enter: hand the keyboard back (to the lanes)
        # keys that belong to the transport and the edit menu whatever widget has the
        # focus, except where text is typed (built here: a key sequence needs the app)
        self.keys = (QKeySequence("Space"), QKeySequence(QKeySequence.Undo),
                     QKeySequence("Ctrl+Shift+Z"), QKeySequence(QKeySequence.Redo),
                     QKeySequence("Ctrl+0"), QKeySequence("Home"))

    def eventFilter(self, obj, ev):
        t = ev.type()
        if t == QEvent.ShortcutOverride:
            if ev.key() in (Qt.Key_Return, Qt.Key_Enter) and not ev.modifiers():
                ev.accept()  # Enter commits the value here (it is Stop elsewhere)
                return True
            seq = QKeySequence(ev.keyCombination())
            if any(seq.matches(k) == QKeySequence.ExactMatch for k in self.keys):
                ev.ignore()  # not for the editor: the window's shortcut runs
                return True
        elif t == QEvent.KeyPress and ev.key() in (Qt.Key_Return, Qt.Key_Enter):
            if isinstance(obj, QAbstractSpinBox):
                obj.interpretText()
            self.commit()
            return True
        return False
