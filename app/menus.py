"""The window's QActions and menus, built from the `Action` table (app/actions.py).

`build_actions` makes one window-wide QAction per row of the table and connects it to the slot
the window gives it; `build_menus` lays them out as `MENUS` says; `fill_recent` refills
File › Open recent. Nothing here knows what an action does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QMenuBar, QWidget

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
    ("&Transport", (Action.PLAY, Action.STOP, Action.HOME, Action.LOOP, Action.TAP)),
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
