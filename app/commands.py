"""The Edit and Transport menus' commands that read the selection: delete, switch take, a bar
region at the playhead, undo/redo, tap and detect tempo, bar 1 at the playhead.

Each reads what the musician selected (the lanes) or where the playhead is (the transport),
asks the `SessionController` to make the edit (an undo command), and reports through a
`Notify` (the window's status line and messages). None of them builds a widget, so the window
only wires them to its actions and views.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from app.controller import ActionError, SessionController
from app.transport_bar import TapTempo
from engine.errors import RiffwrightError


class Notify(Protocol):
    """Where commands report: a one-line problem (`message`) or a status line (`status`)."""

    def message(self, text: str) -> None: ...

    def status(self, text: str) -> None: ...


def guarded(notify: Notify, fn: Callable) -> Callable:
    """`fn`, with a user-fixable error (a `RiffwrightError`) shown as a message instead of
    raised: a view's signal or a menu item never ends in a traceback."""

    def wrapped(*a):
        try:
            return fn(*a)
        except RiffwrightError as e:
            notify.message(str(e))

    return wrapped


class EditCommands:
    """Edits that depend on the selection or the playhead, and the tempo commands."""

    def __init__(self, ctl: SessionController, lanes, transport, notify: Notify,
                 clock: Callable[[], float] = time.perf_counter):
        self.ctl = ctl
        self.lanes = lanes
        self.transport = transport
        self.notify = notify
        self.clock = clock
        self.taps = TapTempo()

    def undo(self) -> None:
        self.ctl.stack.close_merge()
        self.ctl.stack.undo()

    def redo(self) -> None:
        self.ctl.stack.redo()

    def delete_selected(self) -> None:
        """Delete the selected region, else the selected lane (highlighted in the lanes);
        with nothing selected, say so rather than guess."""
        lanes = self.lanes
        if lanes.selected_region:
            tid, rid = lanes.selected_region
            lanes.select_region(None, None)
            guarded(self.notify, self.ctl.delete_region)(tid, rid)
        elif lanes.selected and lanes.selected in lanes.rows:
            guarded(self.notify, self.ctl.delete_track)(lanes.selected)
        else:
            self.notify.status("nothing selected to delete: click a lane or a region first")

    def switch_take(self) -> None:
        """Ctrl+B: hear the selected take, or the next take of its group (selected too)."""
        tid = guarded(self.notify, self.ctl.switch_take)(self.lanes.selected)
        if tid:
            self.lanes.select(tid)

    def region_at_playhead(self) -> None:
        """Ctrl+Shift+R: a one-bar inpaint region from the playhead on the selected lane."""
        r = guarded(self.notify, self.ctl.add_bar_region)(self.lanes.selected,
                                                          self.transport.position())
        if r is not None:
            self.lanes.select_region(self.lanes.selected, r.id)

    def clamp_playhead(self) -> None:
        """After lanes go or shrink, a playhead past the end goes back to the end."""
        end = self.ctl.session.seconds
        if self.transport.position() > end:
            self.transport.seek(end)

    def bar_one_here(self) -> None:
        """Ctrl+Shift+B: bar 1 begins at the playhead (put the playhead on the context's
        first downbeat first); needs a tempo, since bars are made of beats."""
        if not self.ctl.session.tempo:
            self.notify.status("set a tempo first (type it, tap T or Detect): bars need one")
            return
        at = self.transport.position()
        guarded(self.notify, self.ctl.set_bar_start)(at)
        self.notify.status(f"bar 1 at {self.ctl.session.bar_start:.3f} s")

    def tap(self) -> None:
        """T: one tap; from the second tap of a burst on, the tempo follows (one undo step)."""
        bpm = self.taps.tap(self.clock())
        if bpm is not None:
            self.ctl.tap_tempo(bpm)
        tempo = self.ctl.session.tempo
        self.notify.status(f"tap {len(self.taps.taps)}" + (f": {tempo:.1f} BPM" if tempo else ""))

    def estimate_tempo(self, quiet: bool = False) -> float | None:
        """Detect: the tempo estimated from the context (`quiet`: no message when there is
        none, as after an import)."""
        try:
            bpm = self.ctl.estimate_session_tempo()
        except ActionError as e:
            if not quiet:
                self.notify.message(str(e))
            return None
        self.notify.status(f"estimated tempo {bpm:.1f} BPM (tap or type to correct)")
        return bpm
