"""The File menu's commands: new, open, save, recovery and recent sessions; import; export.

Every operation has a plain method the tests and the benchmark drive directly (`open_path`,
`save_to`, `import_paths`, `export_stems_to`, `export_dawproject_to`); the `*_dialog` methods
only ask for a path and call them. Where the session lives is `SessionFiles`' business, edits
go through the `SessionController`, and problems are reported through a `Notify`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from app.commands import EditCommands, Notify, guarded
from app.controller import SessionController, import_files, import_files_with_peaks
from app.session_files import SessionFiles, recovery_question
from engine.errors import RiffwrightError

AUDIO_FILTER = "Audio (*.wav *.flac *.aif *.aiff *.ogg *.mp3);;All files (*)"


class SessionCommands:
    """New, open, save, save as, recovery and recent sessions; importing audio."""

    def __init__(self, parent: QWidget, files: SessionFiles, ctl: SessionController,
                 edits: EditCommands, notify: Notify, modal: bool = True):
        self.parent = parent
        self.files = files
        self.ctl = ctl
        self.edits = edits
        self.notify = notify
        self.modal = modal  # False in tests and the benchmark: never ask
        self._import_worker = None

    @property
    def session(self):
        return self.ctl.session

    # ---- sessions
    def confirm_discard(self) -> bool:
        """True when the current session may be replaced (saved first if asked to)."""
        s = self.session
        if not s.dirty or not s.tracks or not self.modal:
            return True
        r = QMessageBox.question(self.parent, "Unsaved changes",
                                 "Save the changes to this session first?",
                                 QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel)
        if r == QMessageBox.Save:
            return self.save()
        return r == QMessageBox.Discard

    def new_session(self) -> None:
        if self.confirm_discard():
            self.files.new_session()

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        d = QFileDialog.getExistingDirectory(self.parent, "Open session folder",
                                             self.files.last_dir())
        if d:
            self.files.open_path(d)

    def open_recent(self, path: str) -> bool:
        return self.confirm_discard() and self.files.open_path(path)

    def save(self) -> bool:
        if self.session.path is None:
            return self.save_as_dialog()
        return self.files.save_to(self.session.path)

    def save_as_dialog(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save session as (a folder)",
                                              str(Path(self.files.last_dir()) / "My song"))
        return self.files.save_to(path) if path else False

    def offer_recovery(self, ask: bool = True) -> bool:
        """Offer the newest autosave left by a crash; returns True when one was opened."""
        info = self.files.recovery_candidate()
        if info is None:
            return False
        if ask and QMessageBox.question(self.parent, "Recover session",
                                        recovery_question(info)) != QMessageBox.Yes:
            self.files.discard_recovery()
            return False
        return self.files.recover()

    # ---- import
    def import_paths(self, paths: list[str], wait: bool = True) -> int:
        """Import audio files as new context lanes; unsupported files: a message, no change.

        With `wait=False` (drops, the Import dialog) decoding, resampling and the peak
        summaries run in a worker thread and the lanes appear when it is done.
        """
        paths = [str(p) for p in paths]
        rate = self.session.sample_rate
        if wait:
            return self._imported(*import_files_with_peaks(paths, rate))
        from superqt.utils import create_worker

        self.notify.status(f"importing {len(paths)} file(s)…")
        self._import_worker = create_worker(
            import_files_with_peaks, paths, rate,
            _connect={"returned": lambda r: self._imported(*r),
                      "errored": lambda e: self.notify.message(f"import failed: {e}")})
        return 0

    def _imported(self, ok, errors, peaks) -> int:
        if ok:
            replaced = not self.ctl.context_tracks()  # no context before: a new song
            tracks = self.ctl.add_audio_tracks([(n, a) for n, a, _ in ok],
                                               source_files=[p for _, _, p in ok], peaks=peaks)
            self.notify.status(f"imported {len(tracks)} file(s)")
            if replaced:
                self._reset_context_state()
            if replaced or not self.session.tempo:
                self.edits.estimate_tempo(quiet=True)
        if errors:
            more = f"\n…and {len(errors) - 5} more" if len(errors) > 5 else ""
            self.notify.message("\n".join(errors[:5]) + more)
        return len(ok)

    def _reset_context_state(self) -> None:
        """A new context replaced the old one: what came from the old one goes (a loop
        region past the new end; the playhead past it; where the old clip's bar 1 began).
        The tempo is estimated again."""
        s = self.session
        if s.loop and s.loop[1] > s.seconds + 1e-6:
            guarded(self.notify, self.ctl.set_loop)(None)
        if s.bar_start:
            guarded(self.notify, self.ctl.set_bar_start)(0.0)
        self.edits.clamp_playhead()

    def import_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self.parent, "Import audio",
                                                self.files.last_dir(), AUDIO_FILTER)
        if paths:
            self.files.remember_dir(Path(paths[0]).parent)
            self.import_paths(paths, wait=False)

    def add_reference_file(self, path: str) -> None:
        """A file dropped on the panel becomes a reference lane and the audio reference."""
        ok, errors = import_files([path], self.session.sample_rate)
        if errors:
            self.notify.message(errors[0])
            return
        name, audio, src = ok[0]
        [t] = self.ctl.add_audio_tracks([(f"ref: {name}", audio)], role="reference",
                                        source_files=[src])
        self.ctl.set_recipe_value("reference_track", t.id)
        self.notify.status(f"{name} is the audio reference")


class ExportCommands:
    """Stems and mix, a DAWproject, and the file a lane header's drag carries."""

    def __init__(self, parent: QWidget, files: SessionFiles, ctl: SessionController,
                 notify: Notify, selected: Callable[[], str | None],
                 all_takes: Callable[[], bool], export_dir: Path):
        self.parent = parent
        self.files = files
        self.ctl = ctl
        self.notify = notify
        self.selected = selected  # the selected lane's id
        self.all_takes = all_takes  # File › Exports include every take
        self.export_dir = Path(export_dir)

    def _has_lanes(self) -> bool:
        if not self.ctl.session.tracks:
            self.notify.message("nothing to export: the session has no lanes")
            return False
        return True

    def export_stems_to(self, folder: str | Path, selected_only: bool = False) -> list[Path]:
        from engine.document.export import export_stems

        ids = None
        if selected_only:
            if not self.selected():
                self.notify.message("select a lane to export")
                return []
            ids = [self.selected()]
        if not self._has_lanes():
            return []
        try:
            files = export_stems(self.ctl.session, folder, ids, include_mix=not selected_only,
                                 all_takes=self.all_takes())
        except (OSError, RiffwrightError) as e:
            self.notify.message(f"export failed: {e}")
            return []
        self.notify.status(f"exported {len(files)} file(s) to {folder}")
        return files

    def export_dialog(self, selected_only: bool) -> None:
        d = QFileDialog.getExistingDirectory(self.parent, "Export stems to folder",
                                             self.files.last_dir())
        if d:
            self.export_stems_to(d, selected_only)

    def export_dawproject_to(self, path: str | Path) -> Path | None:
        from engine.document.dawproject import export_dawproject

        if not self._has_lanes():
            return None
        try:
            out = export_dawproject(self.ctl.session, path, all_takes=self.all_takes())
        except (OSError, RiffwrightError) as e:
            self.notify.message(f"export failed: {e}")
            return None
        self.notify.status(f"wrote {out}")
        return out

    def export_daw_dialog(self) -> None:
        start = Path(self.files.last_dir()) / f"{self.ctl.session.title}.dawproject"
        p, _ = QFileDialog.getSaveFileName(self.parent, "Export DAWproject", str(start),
                                           "DAWproject (*.dawproject)")
        if p:
            self.export_dawproject_to(p)

    def drag_file(self, tid: str) -> Path | None:
        """The stem a lane header's drag carries, written to the export folder first."""
        from engine.document.export import export_track_for_drag

        try:
            return export_track_for_drag(self.ctl.session, tid, self.export_dir)
        except (OSError, RiffwrightError) as e:
            self.notify.message(f"cannot write the stem for dragging: {e}")
            return None
