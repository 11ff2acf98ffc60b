"""The main window: lanes in the middle, the prompt panel on the right, transport on top.

It builds the widgets and wires them to the layers below, and holds no workflow of its own:
edits go to the `SessionController` (undo commands), generation to the
`GenerationController`, files to `SessionFiles`, and the commands come from the `Action`
table. It holds no global state. Dialogs only appear in the menu slots — every operation has
a plain method (`import_paths`, `save_to`, `open_path`, `export_stems_to`,
`export_dawproject_to`, `run_action`) that the tests and the benchmark drive directly.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QObject, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.actions import ACTIONS, GENERATION_ACTIONS, Action, key_sequence, shortcut_rows
from app.bridge import EngineBridge, list_models
from app.controller import (
    ActionError,
    SessionController,
    import_files,
    import_files_with_peaks,
)
from app.generation import GenerationController
from app.lanes import LaneView
from app.panel import GuidancePanel
from app.session_files import SessionFiles, recovery_question
from app.transport import Transport
from app.transport_bar import TapTempo, TransportBar
from engine.document.session import Session, SessionEvent, UndoStack
from engine.errors import RiffwrightError

AUDIO_FILTER = "Audio (*.wav *.flac *.aif *.aiff *.ogg *.mp3);;All files (*)"
MIN_SIZE = (640, 460)  # the smallest window that still shows the Generate button


class TransportKeys(QObject):
    """Event filter for number boxes and lists (tempo, meter, key, steps, seed…): their
    editors would swallow Space (blanking the tempo) and Ctrl+Z; in every DAW those keys
    reach the transport and the edit menu. Enter commits the value and hands the keyboard
    back to the lanes, as Ableton's and Bitwig's number fields do."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
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
            self.window.focus_lanes()
            return True
        return False


class MainWindow(QMainWindow):
    sig_generation_done = Signal(str)  # an app.generation.Outcome: finished, cancelled, error
    sig_message = Signal(str)  # every message shown to the user

    def __init__(self, settings: QSettings, bridge: EngineBridge, transport: Transport,
                 session: Session, autosave_root: Path, export_dir: Path,
                 modal_messages: bool = True):
        super().__init__()
        self.settings = settings
        self.bridge = bridge
        self.transport = transport
        self.export_dir = Path(export_dir)
        self.modal_messages = modal_messages
        self.last_message = ""
        self.session = session
        self.stack = UndoStack(session)
        self.ctl = SessionController(session, self.stack)
        self.files = SessionFiles(settings, autosave_root, lambda: self.session, self)
        self.gen = GenerationController(bridge, self.ctl, parent=self)
        self.taps = TapTempo()
        self._import_worker = None
        self.setWindowTitle("Riffwright")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.lanes = LaneView(session)
        self.lanes.drag_file_provider = self._drag_file
        self.setCentralWidget(self.lanes)
        self.panel = GuidancePanel()
        self._build_dock()
        self._build_actions()
        self.transport_bar = TransportBar(self.act, self)
        self.addToolBar(Qt.TopToolBarArea, self.transport_bar)
        self._build_status()
        self._build_menus()
        self._connect_views()
        self._connect_layers()
        self._fill_devices()
        self._bind_session(session, fresh=True)
        self.setMinimumSize(*MIN_SIZE)
        self._keys = TransportKeys(self)
        for w in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            w.installEventFilter(self._keys)
        self.restore_layout()

    # ------------------------------------------------------------------ building
    def _build_dock(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        scroll.setFrameShape(QScrollArea.NoFrame)
        # the action buttons stay pinned under the scrolling settings: Generate is always
        # on screen, however small the window
        dock_body = QWidget()
        dock_lay = QVBoxLayout(dock_body)
        dock_lay.setContentsMargins(0, 0, 0, 0)
        dock_lay.setSpacing(0)
        dock_lay.addWidget(scroll, 1)
        dock_lay.addWidget(self.panel.actions_box)
        self.dock = QDockWidget("Prompt and guidance", self)
        self.dock.setObjectName("panelDock")
        self.dock.setWidget(dock_body)
        self.dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, self.dock)

    def _slots(self) -> dict[Action, object]:
        """What each action does (the generation actions all go through `run_action`)."""
        slots = {
            Action.NEW: self.new_session, Action.OPEN: self.open_dialog,
            Action.SAVE: self.save, Action.SAVE_AS: self.save_as_dialog,
            Action.IMPORT: self.import_dialog, Action.EXPORT: lambda: self.export_dialog(False),
            Action.EXPORT_SELECTED: lambda: self.export_dialog(True),
            Action.EXPORT_DAW: self.export_daw_dialog,
            Action.ALL_TAKES: lambda: self.settings.setValue(
                "export_all_takes", self.act[Action.ALL_TAKES].isChecked()),
            Action.QUIT: self.close, Action.UNDO: self.undo, Action.REDO: self.redo,
            Action.DELETE: self.delete_selected, Action.REGION_HERE: self.region_at_playhead,
            Action.NEXT_TAKE: self.switch_take, Action.CANCEL: self.cancel_generation,
            Action.MODELS: self.open_models, Action.PLAY: self.transport.toggle,
            Action.STOP: self.transport.stop, Action.HOME: lambda: self.transport.seek(0.0),
            Action.LOOP: lambda: self.transport.set_loop_enabled(
                self.act[Action.LOOP].isChecked()),
            Action.TAP: self.tap, Action.ZOOM_IN: lambda: self.lanes.zoom(0.5),
            Action.ZOOM_OUT: lambda: self.lanes.zoom(2.0), Action.FIT: self.lanes.fit,
            Action.LANES: self.focus_lanes, Action.PROMPT: self.focus_prompt,
            Action.SHORTCUTS: self.show_shortcuts, Action.ABOUT: self.show_about,
        }
        for a in (*GENERATION_ACTIONS, Action.USE_REFERENCE):
            slots[a] = lambda a=a: self.run_action(a)
        return slots

    def _build_actions(self) -> None:
        """One QAction per row of the actions table, all window-wide shortcuts."""
        slots = self._slots()
        self.act: dict[Action, QAction] = {}
        for name, spec in ACTIONS.items():
            a = QAction(spec.text, self)
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
            self.addAction(a)
            self.act[name] = a
        self.act[Action.LOOP].setChecked(True)
        self.act[Action.ALL_TAKES].setChecked(
            str(self.settings.value("export_all_takes", "false")).lower() == "true")

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_text = QLabel("")
        sb.addWidget(self.status_text, 1)
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.progress_label = QLabel("")
        self.progress_label.hide()
        self.b_cancel = QPushButton("Cancel")
        self.b_cancel.setToolTip("Cancel the generation (Esc)")
        self.b_cancel.clicked.connect(self.cancel_generation)
        self.b_cancel.hide()
        self.silent = QLabel("")
        self.silent.setObjectName("hint")
        self.device_status = QLabel("model: loading…")
        self.device_status.setObjectName("hint")
        for w in (self.progress_label, self.progress, self.b_cancel, self.silent,
                  self.device_status):
            sb.addPermanentWidget(w)
        self._update_silent()

    _MENUS = (
        ("&File", (Action.NEW, Action.OPEN, "recent", None, Action.SAVE, Action.SAVE_AS, None,
                   Action.IMPORT, None, Action.EXPORT, Action.EXPORT_SELECTED,
                   Action.EXPORT_DAW, Action.ALL_TAKES, None, Action.QUIT)),
        ("&Edit", (Action.UNDO, Action.REDO, None, Action.DELETE, Action.REGION_HERE,
                   Action.NEXT_TAKE)),
        ("&Generate", (*GENERATION_ACTIONS, Action.USE_REFERENCE, None, Action.CANCEL, None,
                       Action.MODELS)),
        ("&Transport", (Action.PLAY, Action.STOP, Action.HOME, Action.LOOP, Action.TAP)),
        ("&View", (Action.ZOOM_IN, Action.ZOOM_OUT, Action.FIT, None, Action.LANES,
                   Action.PROMPT, "dock")),
        ("&Help", (Action.SHORTCUTS, Action.ABOUT)),
    )

    def _build_menus(self) -> None:
        for title, items in self._MENUS:
            m = self.menuBar().addMenu(title)
            for item in items:
                if item is None:
                    m.addSeparator()
                elif item == "recent":
                    self.recent_menu = m.addMenu("Open &recent")
                elif item == "dock":
                    m.addAction(self.dock.toggleViewAction())
                else:
                    m.addAction(self.act[item])
        self._fill_recent()

    def _connect_views(self) -> None:
        """The views' signals become controller calls (undo commands) or window actions."""
        L, P, B, ctl = self.lanes, self.panel, self.transport_bar, self.ctl
        L.sig_seek.connect(self.transport.seek)
        L.sig_loop_changed.connect(self._guard(ctl.set_loop))
        L.sig_region_drawn.connect(self._guard(ctl.add_region))
        L.sig_region_moved.connect(self._guard(ctl.move_region))
        L.sig_region_deleted.connect(self._guard(ctl.delete_region))
        L.sig_track_attr.connect(self._guard(ctl.set_track_attr))
        L.sig_merge_closed.connect(lambda: self.stack.close_merge())
        L.sig_take_activated.connect(self._guard(ctl.activate_take))
        L.sig_delete_track.connect(self._guard(ctl.delete_track))
        L.sig_show_provenance.connect(self.show_provenance)
        L.sig_action.connect(self.run_action)
        L.sig_selected.connect(lambda _t: self._update_actions())
        P.sig_recipe_changed.connect(self._guard(ctl.set_recipe_value))
        P.sig_merge_closed.connect(lambda: self.stack.close_merge())
        P.sig_action.connect(self.run_action)
        P.sig_reference_file.connect(self.add_reference_file)
        P.sig_model_chosen.connect(self.choose_model)
        B.sig_tempo.connect(self._guard(ctl.set_tempo))
        B.sig_meter.connect(self._guard(ctl.set_meter))
        B.sig_key.connect(self._guard(ctl.set_key))
        B.sig_detect_tempo.connect(self.estimate_tempo)
        B.sig_device.connect(self._device_chosen)

    def _connect_layers(self) -> None:
        """The engine bridge, the generation workflow, the files and the transport report
        here; the window shows what they say."""
        br, G, F, T = self.bridge, self.gen, self.files, self.transport
        br.sig_model_loading.connect(
            lambda p: self.device_status.setText(f"model: loading {Path(p).name}…"))
        br.sig_model_ready.connect(self._model_ready)
        br.sig_model_failed.connect(self._model_failed)
        G.sig_started.connect(self._gen_started)
        G.sig_progress.connect(self._gen_progress)
        G.sig_stopped.connect(self._gen_stopped)
        G.sig_landed.connect(self._gen_landed)
        G.sig_done.connect(self.sig_generation_done)
        F.sig_replaced.connect(self._session_replaced)
        F.sig_recent_changed.connect(self._fill_recent)
        F.sig_saved.connect(lambda _f: self._update_title())
        for layer in (G, F):
            layer.sig_status.connect(self.status)
            layer.sig_message.connect(self.message)
        T.sig_position.connect(self._position)
        T.sig_state.connect(self._transport_state)
        T.sig_silent.connect(lambda _r: self._update_silent())
        self.stack.subscribe(self._stack_changed)

    def _guard(self, fn):
        """Run `fn`, turning user-fixable errors into a message."""

        def wrapped(*a):
            try:
                return fn(*a)
            except RiffwrightError as e:
                self.message(str(e))

        return wrapped

    # ------------------------------------------------------------------ session binding
    def _bind_session(self, session: Session, fresh: bool) -> None:
        old = getattr(self, "_bound", None)
        if old is not None:
            old.unsubscribe(self._session_event)
        self.session = session
        self._bound = session
        if not fresh:
            self.stack = UndoStack(session)
            self.stack.subscribe(self._stack_changed)
        self.ctl.bind(session, self.stack)
        session.subscribe(self._session_event)
        if not fresh:
            self.lanes.set_session(session)
        self.transport.set_session(session)
        if not session.recipe:  # a new session keeps the panel's settings, not its prompt
            self.ctl.set_recipe_defaults(self.panel.recipe().replace(prompt="",
                                                                     reference_track=None))
        self._refresh_reference_choices()
        self.panel.set_recipe(session.recipe)
        self._sync_length_rule()
        self.transport_bar.show_session(session)
        self._update_title()
        self._update_actions()

    def _session_replaced(self, session: Session) -> None:
        self.transport.stop()
        self._bind_session(session, fresh=False)

    def _sync_length_rule(self) -> None:
        recipe = self.ctl.recipe
        why = self.ctl.generate_span(recipe)[2]
        self.panel.set_length_rule(self.ctl.length_rule(recipe), why == "length")

    def _clamp_playhead(self) -> None:
        """After lanes go or shrink, a playhead past the end goes back to the end."""
        end = self.session.seconds
        if self.transport.position() > end:
            self.transport.seek(end)

    def _session_event(self, event: SessionEvent, p: dict) -> None:
        """The window's own views follow the session (the lanes and the transport
        subscribe by themselves); `_FOLLOW` says which view shows what."""
        attr = p.get("attr") if event in (SessionEvent.TRACK_CHANGED,
                                          SessionEvent.SESSION_CHANGED) else None
        for show in _FOLLOW.get((event, attr), ()):
            show(self)
        self._update_title()
        self._update_actions()

    def _refresh_reference_choices(self) -> None:
        cur = self.ctl.recipe.reference_track
        self.panel.set_reference_choices([(t.id, t.name) for t in self.session.tracks], cur)

    def _stack_changed(self) -> None:
        undo, redo = self.act[Action.UNDO], self.act[Action.REDO]
        undo.setEnabled(self.stack.can_undo())
        redo.setEnabled(self.stack.can_redo())
        undo.setText(f"&Undo {self.stack.undo_text()}".strip())
        redo.setText(f"&Redo {self.stack.redo_text()}".strip())
        self._update_title()

    def _update_title(self) -> None:
        s = self.session
        name = s.path.name if s.path else s.title
        self.setWindowTitle(f"{'● ' if s.dirty else ''}{name} — Riffwright")

    def _update_actions(self) -> None:
        busy = self.gen.busy
        t = None
        if self.lanes.selected:
            try:
                t = self.session.track(self.lanes.selected)
            except KeyError:  # the lane went (undo) before the selection followed
                t = None
        enable = {
            Action.GENERATE: not busy,
            Action.ARRANGE: not busy,
            Action.INPAINT: not busy and t is not None and bool(t.regions),
            Action.VARY: not busy and t is not None,
            Action.CONTINUE: not busy and t is not None,
            Action.REGENERATE: not busy and t is not None and bool(t.provenance),
            Action.USE_CONTEXT: t is not None and t.role == "generated",
        }
        for a, on in enable.items():
            self.act[a].setEnabled(on)
            self.panel.buttons[a.value].setEnabled(on)
        self.act[Action.USE_REFERENCE].setEnabled(t is not None)
        self.act[Action.EXPORT_SELECTED].setEnabled(t is not None)

    # ------------------------------------------------------------------ messages
    def message(self, text: str, title: str = "Riffwright") -> None:
        """Show a one-line problem to the musician (never a traceback)."""
        self.last_message = text
        self.status_text.setText(text)
        self.sig_message.emit(text)
        if self.modal_messages:
            box = QMessageBox(QMessageBox.Warning, title, text, QMessageBox.Ok, self)
            box.setAttribute(Qt.WA_DeleteOnClose)
            box.open()

    def status(self, text: str) -> None:
        self.status_text.setText(text)

    # ------------------------------------------------------------------ import
    def import_paths(self, paths: list[str], wait: bool = True) -> int:
        """Import audio files as new context lanes; unsupported files: a message, no change.

        With `wait=False` (drops, the Import dialog) decoding, resampling and the peak
        summaries run in a worker thread and the lanes appear when it is done.
        """
        paths = [str(p) for p in paths]
        if not wait:
            from superqt.utils import create_worker

            self.status(f"importing {len(paths)} file(s)…")
            self._import_worker = create_worker(
                import_files_with_peaks, paths, self.session.sample_rate,
                _connect={"returned": lambda r: self._imported(*r),
                          "errored": lambda e: self.message(f"import failed: {e}")})
            return 0
        return self._imported(*import_files_with_peaks(paths, self.session.sample_rate))

    def _imported(self, ok, errors, peaks) -> int:
        if ok:
            replaced = not self.ctl.context_tracks()  # no context before: a new song
            tracks = self.ctl.add_audio_tracks([(n, a) for n, a, _ in ok],
                                               source_files=[p for _, _, p in ok], peaks=peaks)
            self.status(f"imported {len(tracks)} file(s)")
            if replaced:
                self._reset_context_state()
            if replaced or not self.session.tempo:
                self.estimate_tempo(quiet=True)
        if errors:
            self.message("\n".join(errors[:5]) + (f"\n…and {len(errors) - 5} more"
                                                 if len(errors) > 5 else ""))
        return len(ok)

    def _reset_context_state(self) -> None:
        """A new context replaced the old one: what came from the old one goes (a loop
        region past the new end; the playhead past it). The tempo is estimated again."""
        s = self.session
        if s.loop and s.loop[1] > s.seconds + 1e-6:
            self._guard(self.ctl.set_loop)(None)
        self._clamp_playhead()

    def import_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Import audio", self.files.last_dir(),
                                                AUDIO_FILTER)
        if paths:
            self.files.remember_dir(Path(paths[0]).parent)
            self.import_paths(paths, wait=False)

    def add_reference_file(self, path: str) -> None:
        ok, errors = import_files([path], self.session.sample_rate)
        if errors:
            self.message(errors[0])
            return
        name, audio, src = ok[0]
        [t] = self.ctl.add_audio_tracks([(f"ref: {name}", audio)], role="reference",
                                        source_files=[src])
        self.ctl.set_recipe_value("reference_track", t.id)
        self.status(f"{name} is the audio reference")

    def dragEnterEvent(self, ev):
        if ev.mimeData().hasUrls() and not ev.mimeData().hasFormat("application/x-riffwright-track"):
            ev.acceptProposedAction()

    def dragMoveEvent(self, ev):
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):
        if ev.mimeData().hasFormat("application/x-riffwright-track"):
            return
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.import_paths(paths, wait=False)

    # ------------------------------------------------------------------ session files
    def confirm_discard(self) -> bool:
        if not self.session.dirty or not self.session.tracks or not self.modal_messages:
            return True
        r = QMessageBox.question(self, "Unsaved changes",
                                 "Save the changes to this session first?",
                                 QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel)
        if r == QMessageBox.Save:
            return self.save()
        return r == QMessageBox.Discard

    def new_session(self) -> None:
        if self.confirm_discard():
            self.files.new_session()

    def open_path(self, path: str | Path) -> bool:
        return self.files.open_path(path)

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        d = QFileDialog.getExistingDirectory(self, "Open session folder", self.files.last_dir())
        if d:
            self.open_path(d)

    def save_to(self, folder: str | Path) -> bool:
        return self.files.save_to(folder)

    def save(self) -> bool:
        if self.session.path is None:
            return self.save_as_dialog()
        return self.save_to(self.session.path)

    def save_as_dialog(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save session as (a folder)",
                                              str(Path(self.files.last_dir()) / "My song"))
        return self.save_to(path) if path else False

    def offer_recovery(self, ask: bool = True) -> bool:
        """Offer the newest autosave left by a crash; returns True when one was opened."""
        info = self.files.recovery_candidate()
        if info is None:
            return False
        if ask and QMessageBox.question(self, "Recover session", recovery_question(info)
                                        ) != QMessageBox.Yes:
            self.files.discard_recovery()
            return False
        ok = self.files.recover()
        self._update_title()
        return ok

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.files.recent()
        for p in recent:
            self.recent_menu.addAction(Path(p).name, lambda p=p: self.confirm_discard()
                                       and self.open_path(p)).setToolTip(p)
        self.recent_menu.setEnabled(bool(recent))

    # ------------------------------------------------------------------ export
    def export_stems_to(self, folder: str | Path, selected_only: bool = False) -> list[Path]:
        from engine.document.export import export_stems

        ids = None
        if selected_only:
            if not self.lanes.selected:
                self.message("select a lane to export")
                return []
            ids = [self.lanes.selected]
        if not self.session.tracks:
            self.message("nothing to export: the session has no lanes")
            return []
        try:
            files = export_stems(self.session, folder, ids, include_mix=not selected_only,
                                 all_takes=self.act[Action.ALL_TAKES].isChecked())
        except (OSError, RiffwrightError) as e:
            self.message(f"export failed: {e}")
            return []
        self.status(f"exported {len(files)} file(s) to {folder}")
        return files

    def export_dialog(self, selected_only: bool) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export stems to folder",
                                             self.files.last_dir())
        if d:
            self.export_stems_to(d, selected_only)

    def export_dawproject_to(self, path: str | Path) -> Path | None:
        from engine.document.dawproject import export_dawproject

        if not self.session.tracks:
            self.message("nothing to export: the session has no lanes")
            return None
        try:
            out = export_dawproject(self.session, path,
                                    all_takes=self.act[Action.ALL_TAKES].isChecked())
        except (OSError, RiffwrightError) as e:
            self.message(f"export failed: {e}")
            return None
        self.status(f"wrote {out}")
        return out

    def export_daw_dialog(self) -> None:
        start = Path(self.files.last_dir()) / f"{self.session.title}.dawproject"
        p, _ = QFileDialog.getSaveFileName(self, "Export DAWproject", str(start),
                                           "DAWproject (*.dawproject)")
        if p:
            self.export_dawproject_to(p)

    def _drag_file(self, tid: str) -> Path | None:
        from engine.document.export import export_track_for_drag

        try:
            return export_track_for_drag(self.session, tid, self.export_dir)
        except (OSError, RiffwrightError) as e:
            self.message(f"cannot write the stem for dragging: {e}")
            return None

    # ------------------------------------------------------------------ edit
    def undo(self) -> None:
        self.stack.close_merge()
        self.stack.undo()

    def redo(self) -> None:
        self.stack.redo()

    def delete_selected(self) -> None:
        """Delete the selected region, else the selected lane (highlighted in the lanes);
        with nothing selected, say so rather than guess."""
        if self.lanes.selected_region:
            tid, rid = self.lanes.selected_region
            self.lanes.select_region(None, None)
            self._guard(self.ctl.delete_region)(tid, rid)
        elif self.lanes.selected and self.lanes.selected in self.lanes.rows:
            self._guard(self.ctl.delete_track)(self.lanes.selected)
        else:
            self.status("nothing selected to delete: click a lane or a region first")

    def switch_take(self) -> None:
        """Ctrl+B: hear the selected take, or the next take of its group (selected too)."""
        tid = self._guard(self.ctl.switch_take)(self.lanes.selected)
        if tid:
            self.lanes.select(tid)

    def region_at_playhead(self) -> None:
        """Ctrl+Shift+R: a one-bar inpaint region from the playhead on the selected lane."""
        r = self._guard(self.ctl.add_bar_region)(self.lanes.selected, self.transport.position())
        if r is not None:
            self.lanes.select_region(self.lanes.selected, r.id)

    # ------------------------------------------------------------------ transport
    def seek(self, seconds: float) -> None:
        self.transport.seek(seconds)

    def _position(self, sec: float) -> None:
        self.lanes.set_playhead(sec)
        self.transport_bar.show_position(sec, self.session.bars_beats(sec))

    def _transport_state(self, state: str) -> None:
        self.transport_bar.show_playing(state == "playing")
        self._update_silent()

    def _update_silent(self) -> None:
        r = self.transport.silent_reason
        self.silent.setText(f"silent — {r}" if r else "")
        self.silent.setToolTip(r or "")

    def _fill_devices(self) -> None:
        if self.transport_bar.set_devices(self.transport.output_devices(),
                                          self.settings.value("output_device")):
            self.transport.set_device(self.transport_bar.out_device.currentData())

    def _device_chosen(self, device, name: str) -> None:
        self.transport.set_device(device)
        self.settings.setValue("output_device", name)
        self._update_silent()

    def tap(self) -> None:
        bpm = self.taps.tap(time.perf_counter())
        if bpm is not None:
            self.ctl.tap_tempo(bpm)
        self.status(f"tap {len(self.taps.taps)}" + (f": {self.session.tempo:.1f} BPM"
                                                    if self.session.tempo else ""))

    def estimate_tempo(self, quiet: bool = False) -> float | None:
        try:
            bpm = self.ctl.estimate_session_tempo()
        except ActionError as e:
            if not quiet:
                self.message(str(e))
            return None
        self.status(f"estimated tempo {bpm:.1f} BPM (tap or type to correct)")
        return bpm

    # ------------------------------------------------------------------ model
    def _model_ready(self, name: str, device: str) -> None:
        info = self.bridge.generator
        self.ctl.adopt_model_defaults(info.defaults if info else {})
        self.panel.set_text_prior_available(bool(info and info.text_prior))
        self.device_status.setText(f"model: {name}")
        self.panel.set_device(device, True)
        self.panel.set_models(list_models(), self.bridge.model_path, name)
        self._update_actions()

    def _model_failed(self, msg: str) -> None:
        self.device_status.setText("model: not loaded")
        self.panel.set_text_prior_available(False)
        self.panel.set_device("no model", False)
        self.message(msg)

    def open_models(self) -> None:
        from app.models_dialog import open_models_dialog

        open_models_dialog(self, current=self.bridge.model_path, on_chosen=self.choose_model)

    def choose_model(self, path: str) -> None:
        if path and path != self.bridge.model_path:
            self.bridge.load_model(path)

    # ------------------------------------------------------------------ generation
    def run_action(self, action: str | Action) -> bool:
        """Start an action from the panel, a lane or the menu; True when a generation
        started."""
        action = Action(action)
        sel = self.lanes.selected
        try:
            if action == Action.USE_CONTEXT:
                if not sel:
                    raise ActionError("select a generated take first")
                self.ctl.use_as_context(sel)
                return False
            if action == Action.USE_REFERENCE:
                self.ctl.set_recipe_value("reference_track", sel)
                return False
            if self.gen.busy:
                raise ActionError("a generation is already running (Esc cancels it)")
            if action == Action.ARRANGE:
                prompts = dialogs.ask_arrangement(self)
                return bool(prompts) and self.gen.start_arrangement(prompts)
            job = self._build_job(action, sel)
        except (RiffwrightError, KeyError) as e:
            self.message(str(e) if isinstance(e, RiffwrightError) else "that lane no longer exists")
            return False
        return self.gen.start(job)

    def _build_job(self, action: Action, sel: str | None):
        if action == Action.REGENERATE:
            job = self.ctl.regenerate_job(self.ctl.selected_track(sel).id)
        else:
            self.ctl.draw_seed()  # a fresh seed per generation unless it is locked
            region = self.lanes.selected_region
            rid = region[1] if region and region[0] == sel else None
            job = self.ctl.build_job(action.value, self.ctl.recipe, sel, rid)
        job.recipe = self.ctl.recipe
        return job

    def _gen_started(self, job) -> None:
        self.focus_lanes()  # the clicked button is disabled now: keys go to the transport
        self.lanes.prepare_rows(job.takes)
        self.progress.setValue(0)
        self.progress.show()
        self.progress_label.setText("starting…")
        self.progress_label.show()
        self.b_cancel.show()
        self.panel.set_busy(True)
        self._update_actions()

    def _gen_progress(self, p) -> None:
        self.progress.setValue(p.percent)
        self.progress.setFormat(p.format)
        self.progress_label.setText(p.label)

    def _gen_stopped(self) -> None:
        self.lanes.release_rows()
        self.progress.hide()
        self.progress_label.hide()
        self.b_cancel.hide()
        self.panel.set_busy(False)
        self._update_actions()

    def _gen_landed(self, job, tracks, seconds: float) -> None:
        if tracks:
            self.lanes.select(tracks[0].id)
        self.status(f"{len(tracks)} take(s) of “{job.name}” in {seconds:.1f} s — "
                    "click a take's A/B button to switch")

    def cancel_generation(self) -> None:
        """Esc: cancel the running generation; otherwise leave a text field (as in a DAW)."""
        if self.gen.cancel():
            self.progress_label.setText("cancelling…")
        else:
            self.focus_lanes()

    # ------------------------------------------------------------------ keyboard
    def focus_lanes(self) -> None:
        """Give the keyboard to the lanes: Space, arrows, Delete and the edit keys act there."""
        self.lanes.setFocus(Qt.OtherFocusReason)

    def focus_prompt(self) -> None:
        self.dock.show()
        self.panel.prompt.setFocus(Qt.ShortcutFocusReason)

    # ------------------------------------------------------------------ provenance, help
    def show_provenance(self, tid: str) -> None:
        def regenerate():
            self.lanes.select(tid)
            self.run_action(Action.REGENERATE)

        self.provenance_dialog = dialogs.provenance_dialog(
            self, self.session.track(tid), lambda: self.status("command line copied"),
            regenerate)
        self.provenance_dialog.open()

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(what, keys) for every action with a shortcut, plus the lanes' own keys."""
        return shortcut_rows()

    def show_shortcuts(self) -> None:
        self.shortcuts_box = dialogs.rich_box(self, "Keyboard shortcuts",
                                              dialogs.shortcuts_html(shortcut_rows()))
        self.shortcuts_box.open()

    def about_text(self) -> str:
        from app.about import about_html

        return about_html(self.bridge.model_path)

    def show_about(self) -> None:
        self.about_box = dialogs.rich_box(self, "About Riffwright", self.about_text(),
                                          QMessageBox.NoIcon)
        self.about_box.open()

    # ------------------------------------------------------------------ layout
    def restore_layout(self) -> None:
        g = self.settings.value("geometry")
        st = self.settings.value("state")
        if not (isinstance(g, QByteArray) and not g.isEmpty() and self.restoreGeometry(g)
                and self.width() >= MIN_SIZE[0] and self.height() >= MIN_SIZE[1]):
            screen = self.screen().availableGeometry() if self.screen() else None
            w, h = 1400, 820
            if screen is not None:
                w, h = min(w, screen.width()), min(h, screen.height())
            self.resize(w, h)
        if isinstance(st, QByteArray) and not st.isEmpty():
            self.restoreState(st)

    def save_layout(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.settings.sync()

    def closeEvent(self, ev):
        if not self.confirm_discard():
            ev.ignore()
            return
        self.save_layout()
        self.transport.close()
        self.bridge.shutdown()
        self.files.discard_autosave()
        super().closeEvent(ev)


def _show_recipe(w: MainWindow) -> None:
    w.panel.set_recipe(w.session.recipe)


def _show_meter(w: MainWindow) -> None:
    w.transport_bar.show_session(w.session)


_LANES = (MainWindow._refresh_reference_choices, MainWindow._sync_length_rule)
_E = SessionEvent
# (event, attribute) -> what the window shows again
_FOLLOW = {
    (_E.TRACK_ADDED, None): _LANES,
    (_E.TRACK_REMOVED, None): (*_LANES, MainWindow._clamp_playhead),
    (_E.TRACK_CHANGED, "in_context"): _LANES,
    (_E.TRACK_CHANGED, "role"): _LANES,
    (_E.TRACK_CHANGED, "name"): (MainWindow._refresh_reference_choices,),
    (_E.SESSION_CHANGED, "recipe"): (_show_recipe, MainWindow._sync_length_rule),
    (_E.SESSION_CHANGED, "loop"): (MainWindow._sync_length_rule,),
    **{(_E.SESSION_CHANGED, a): (_show_meter,) for a in ("tempo", "meter", "key")},
}
