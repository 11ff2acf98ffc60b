"""Session files: open, save, save as, autosave, crash recovery and the recent-files list.

`SessionFiles` owns everything about where the current session lives on disk: the autosave
slot of this window (a folder in the user data folder, written every 30 s in a background
thread), the recent list and the last folder used (in `QSettings`). It never shows a dialog
and never rebinds views: a session read from disk goes out as `sig_replaced(Session)` and the
window binds it; problems go out as `sig_message`, progress as `sig_status`. The dialogs that
ask for a folder or a yes/no live in the window, which calls these plain methods with the
answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer, Signal

from engine.document.session import (
    Session,
    autosave_snapshot,
    discard_autosave,
    recovery_candidates,
)
from engine.errors import RiffwrightError

MAX_RECENT = 8
AUTOSAVE_INTERVAL_MS = 30_000


def _new_slot() -> str:
    return uuid.uuid4().hex[:12]


class SessionFiles(QObject):
    sig_replaced = Signal(object)  # a Session to show instead of the current one
    sig_saved = Signal(str)  # the folder
    sig_recent_changed = Signal()
    sig_status = Signal(str)
    sig_message = Signal(str)

    def __init__(self, settings: QSettings, autosave_root: Path, current, parent=None):
        """`current()` returns the session shown now (the window rebinds it)."""
        super().__init__(parent)
        self.settings = settings
        self.autosave_root = Path(autosave_root)
        self.current = current
        self.slot = _new_slot()
        self.autosave_error = ""  # the last failed autosave, "" once one succeeds
        self._thread: threading.Thread | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self.timer.timeout.connect(self.autosave_now)
        self.timer.start()

    # ---- replacing the session
    def _replace(self, session: Session) -> None:
        """Leave this window's autosave behind and show `session` under a new slot."""
        discard_autosave(self.autosave_root, self.slot)
        self.slot = _new_slot()
        self.sig_replaced.emit(session)

    def new_session(self) -> None:
        self._replace(Session(self.current().sample_rate))

    def open_path(self, path: str | Path) -> bool:
        try:
            session = Session.load(path)
        except RiffwrightError as e:
            self.sig_message.emit(str(e))
            return False
        self._replace(session)
        self.add_recent(str(Path(path)))
        self.sig_status.emit(f"opened {Path(path).name}")
        return True

    # ---- saving
    def save_to(self, folder: str | Path) -> bool:
        session = self.current()
        try:
            session.title = Path(folder).name
            session.save(folder)
        except (OSError, RiffwrightError) as e:
            self.sig_message.emit(f"cannot save the session: {e}")
            return False
        discard_autosave(self.autosave_root, self.slot)
        self.add_recent(str(Path(folder)))
        self.sig_saved.emit(str(folder))
        self.sig_status.emit(f"saved {folder}")
        return True

    def autosave_now(self, wait: bool = False) -> Path | None:
        """Snapshot the session and write it to the autosave folder in a background thread.

        A failed write (full disk...) is shown in the status bar on the next tick and tried
        again every tick; the thread never dies silently."""
        if self.autosave_error:
            self.sig_status.emit(f"autosave failed, retrying: {self.autosave_error}")
        session = self.current()
        if not session.dirty or not session.tracks:
            return None
        if self._thread is not None and self._thread.is_alive():
            return None
        write = autosave_snapshot(session, self.autosave_root, self.slot)

        def run():
            try:
                write()
                self.autosave_error = ""
            except Exception as e:  # noqa: BLE001 - any failure is reported, then retried
                self.autosave_error = str(e) or type(e).__name__

        self._thread = threading.Thread(target=run, daemon=True, name="riffwright-autosave")
        self._thread.start()
        if wait:
            self._thread.join()
        return self.autosave_root / self.slot

    def discard_autosave(self) -> None:
        """The session closed normally: its autosave is not a crash to recover from."""
        discard_autosave(self.autosave_root, self.slot)

    # ---- recovery
    def recovery_candidate(self) -> dict | None:
        """What the newest autosave left by a crash holds (title, time…), or None."""
        cands = self._candidates()
        return cands[0][1] if cands else None

    def _candidates(self) -> list[tuple[Path, dict]]:
        return [c for c in recovery_candidates(self.autosave_root) if c[0].name != self.slot]

    def discard_recovery(self) -> None:
        """Forget every autosave left by a crash (declined, or read): never offered again."""
        for folder, _ in self._candidates():
            discard_autosave(self.autosave_root, folder.name)

    def recover(self) -> bool:
        """Open the newest autosave as an unsaved session that keeps its original folder."""
        cands = self._candidates()
        if not cands:
            return False
        folder, info = cands[0]
        try:
            session = Session.load(folder)
        except RiffwrightError as e:
            self.sig_message.emit(f"the autosave could not be read: {e}")
            self.discard_recovery()
            return False
        origin = info.get("origin")
        session.path = Path(origin) if origin else None
        session.dirty = True
        self._replace(session)
        session.dirty = True
        self.discard_recovery()
        self.sig_status.emit("recovered the autosaved session")
        return True

    # ---- recent files and the last folder
    def recent(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def add_recent(self, path: str) -> None:
        rec = [p for p in self.recent() if p != path]
        rec.insert(0, path)
        self.settings.setValue("recent", rec[:MAX_RECENT])
        self.remember_dir(Path(path).parent)
        self.sig_recent_changed.emit()

    def last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

    def remember_dir(self, folder: str | Path) -> None:
        self.settings.setValue("last_dir", str(folder))


def recovery_question(info: dict) -> str:
    """The question asked before recovering an autosave."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("time", 0)))
    return (f"Riffwright did not close cleanly. Recover “{info.get('title', 'Untitled')}” "
            f"from its autosave of {when}?")
