"""The main window: lanes in the middle, the prompt panel on the right, transport on top.

It builds the widgets and wires them to the layers below, and holds no workflow of its own:
edits go to the `SessionController` (undo commands), generation to the
`GenerationController`, files to `SessionFiles`. The menus and their keys come from the
`Action` table (`app/menus.py`); what a command does lives in a small object the window
builds: `EditCommands` (app/commands.py), `SessionCommands` and `ExportCommands`
(app/file_commands.py), `DialogLauncher` (app/dialogs.py). Which actions are enabled is
`action_states`, a pure function of the selection and the engine. It holds no global state.
Dialogs only appear in the menu slots: every operation has a plain method (`import_paths`,
`save_to`, `open_path`, `run_action`, `exports.export_stems_to`,
`exports.export_dawproject_to`) that the tests and the benchmark drive directly.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.actions import Action, action_states
from app.bridge import EngineBridge, list_models
from app.commands import EditCommands, guarded
from app.controller import SessionController
from app.file_commands import ExportCommands, SessionCommands
from app.generation import GenerationController
from app.job_status import JobStatus
from app.lanes import LaneView
from app.menus import TransportKeys, build_actions, build_menus, fill_recent, window_slots
from app.panel import GuidancePanel
from app.session_files import SessionFiles
from app.transport import Transport
from app.transport_bar import TransportBar, TransportFollower
from engine.document.session import Session, SessionEvent, UndoStack
from engine.errors import RiffwrightError

MIN_SIZE = (640, 460)  # the smallest window that still shows the Generate button
TRACK_MIME = "application/x-riffwright-track"  # a lane header dragged inside the window


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
        self.modal_messages = modal_messages
        self.last_message = ""
        self.session = session
        self.stack = UndoStack(session)
        self.ctl = SessionController(session, self.stack)
        self.files = SessionFiles(settings, autosave_root, lambda: self.session, self)
        self.gen = GenerationController(bridge, self.ctl, parent=self)
        self.setWindowTitle("Riffwright")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.lanes = LaneView(session)
        self.setCentralWidget(self.lanes)
        self.panel = GuidancePanel()
        self._build_commands(export_dir)
        self._build_dock()
        self.act = build_actions(self, window_slots(self))
        self.act[Action.LOOP].setChecked(True)
        self.act[Action.ALL_TAKES].setChecked(
            str(self.settings.value("export_all_takes", "false")).lower() == "true")
        self.transport_bar = TransportBar(self.act, self)
        self.addToolBar(Qt.TopToolBarArea, self.transport_bar)
        self._build_status()
        self.recent_menu = build_menus(self.menuBar(), self.act, self.dock.toggleViewAction())
        fill_recent(self.recent_menu, self.files.recent(), self.sessions.open_recent)
        self._connect_views()
        self._connect_layers()
        self.follower = TransportFollower(self.transport_bar, transport, self.lanes,
                                          self.silent, settings, lambda: self.session)
        self._bind_session(session, fresh=True)
        self.setMinimumSize(*MIN_SIZE)
        self._keys = TransportKeys(self, self.focus_lanes)
        for w in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            w.installEventFilter(self._keys)
        self.restore_layout()

    # ------------------------------------------------------------------ building
    def _build_commands(self, export_dir: Path) -> None:
        """The menus' commands, each a small object over the layers below."""
        self.edits = EditCommands(self.ctl, self.lanes, self.transport, self)
        self.sessions = SessionCommands(self, self.files, self.ctl, self.edits, self,
                                        modal=self.modal_messages)
        self.exports = ExportCommands(
            self, self.files, self.ctl, self, lambda: self.lanes.selected,
            lambda: self.act[Action.ALL_TAKES].isChecked(), export_dir)
        self.dialogs = dialogs.DialogLauncher(self, lambda: self.bridge.model_path, self.status)
        self.lanes.drag_file_provider = self.exports.drag_file

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

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_text = QLabel("")
        sb.addWidget(self.status_text, 1)
        self.job_status = JobStatus(sb)
        self.job_status.cancel.clicked.connect(self.cancel_generation)
        self.silent = QLabel("")
        self.silent.setObjectName("hint")
        self.device_status = QLabel("model: loading…")
        self.device_status.setObjectName("hint")
        for w in (self.silent, self.device_status):
            sb.addPermanentWidget(w)

    def _connect_views(self) -> None:
        """The views' signals become controller calls (undo commands) or window actions."""
        L, P, B, ctl = self.lanes, self.panel, self.transport_bar, self.ctl

        def g(fn):  # a user-fixable error becomes a message
            return guarded(self, fn)

        L.sig_seek.connect(self.transport.seek)
        L.sig_loop_changed.connect(g(ctl.set_loop))
        L.sig_region_drawn.connect(g(ctl.add_region))
        L.sig_region_moved.connect(g(ctl.move_region))
        L.sig_region_deleted.connect(g(ctl.delete_region))
        L.sig_track_attr.connect(g(ctl.set_track_attr))
        L.sig_merge_closed.connect(lambda: self.stack.close_merge())
        L.sig_take_activated.connect(g(ctl.activate_take))
        L.sig_delete_track.connect(g(ctl.delete_track))
        L.sig_show_provenance.connect(self.show_provenance)
        L.sig_action.connect(self.run_action)
        L.sig_selected.connect(lambda _t: self._update_actions())
        P.sig_recipe_changed.connect(g(ctl.set_recipe_value))
        P.sig_merge_closed.connect(lambda: self.stack.close_merge())
        P.sig_action.connect(self.run_action)
        P.sig_reference_file.connect(self.sessions.add_reference_file)
        P.sig_model_chosen.connect(self.choose_model)
        B.sig_tempo.connect(g(ctl.set_tempo))
        B.sig_meter.connect(g(ctl.set_meter))
        B.sig_bar_start.connect(g(ctl.set_bar_start))
        B.sig_key.connect(g(ctl.set_key))
        B.sig_detect_tempo.connect(self.edits.estimate_tempo)

    def _connect_layers(self) -> None:
        """The engine bridge, the generation workflow, the files and the transport report
        here; the window shows what they say."""
        br, G, F = self.bridge, self.gen, self.files
        br.sig_model_loading.connect(
            lambda p: self.device_status.setText(f"model: loading {Path(p).name}…"))
        br.sig_model_ready.connect(lambda *_: G.adopt_model())
        br.sig_model_ready.connect(self._model_ready)
        br.sig_model_failed.connect(self._model_failed)
        G.sig_started.connect(self._gen_started)
        G.sig_progress.connect(self.job_status.show_progress)
        G.sig_stopped.connect(self._gen_stopped)
        G.sig_landed.connect(self._gen_landed)
        G.sig_done.connect(self.sig_generation_done)
        F.sig_replaced.connect(self._session_replaced)
        F.sig_recent_changed.connect(
            lambda: fill_recent(self.recent_menu, F.recent(), self.sessions.open_recent))
        F.sig_saved.connect(lambda _f: self._update_title())
        for layer in (G, F):
            layer.sig_status.connect(self.status)
            layer.sig_message.connect(self.message)
        self.stack.subscribe(self._stack_changed)

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
        """Enable what the selection and the engine allow (`action_states`)."""
        track = self.ctl.find_track(self.lanes.selected)
        for a, on in action_states(self.gen.busy, track).items():
            self.act[a].setEnabled(on)
            if a.value in self.panel.buttons:
                self.panel.buttons[a.value].setEnabled(on)

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

    # ------------------------------------------------------------------ files
    def import_paths(self, paths: list[str], wait: bool = True) -> int:
        return self.sessions.import_paths(paths, wait)

    def open_path(self, path: str | Path) -> bool:
        return self.files.open_path(path)

    def save_to(self, folder: str | Path) -> bool:
        return self.files.save_to(folder)

    def offer_recovery(self, ask: bool = True) -> bool:
        """Offer the newest autosave left by a crash; returns True when one was opened."""
        ok = self.sessions.offer_recovery(ask)
        self._update_title()
        return ok

    def dragEnterEvent(self, ev):
        if ev.mimeData().hasUrls() and not ev.mimeData().hasFormat(TRACK_MIME):
            ev.acceptProposedAction()

    def dragMoveEvent(self, ev):
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):
        if ev.mimeData().hasFormat(TRACK_MIME):
            return
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.import_paths(paths, wait=False)

    # ------------------------------------------------------------------ transport
    def seek(self, seconds: float) -> None:
        self.transport.seek(seconds)

    # ------------------------------------------------------------------ model
    def _model_ready(self, name: str, device: str) -> None:
        info = self.bridge.generator
        self.panel.set_text_prior_available(bool(info and info.text_prior))
        self.panel.set_guidance_available(bool(info and info.harmony),
                                          bool(info and info.rhythm))
        self.ctl.harmony_available = bool(info and info.harmony)
        self.ctl.rhythm_available = bool(info and info.rhythm)
        self.device_status.setText(f"model: {name}")
        self.panel.set_device(device, True)
        self.panel.set_models(list_models(), self.bridge.model_path, name)
        self._update_actions()

    def _model_failed(self, msg: str) -> None:
        self.device_status.setText("model: not loaded")
        self.panel.set_text_prior_available(False)
        self.panel.set_guidance_available(False, False)
        self.ctl.harmony_available = self.ctl.rhythm_available = False
        self.panel.set_device("no model", False)
        self.message(msg)

    def choose_model(self, path: str) -> None:
        if path and path != self.bridge.model_path:
            self.bridge.load_model(path)

    # ------------------------------------------------------------------ generation
    def run_action(self, action: str | Action) -> bool:
        """Start an action from the panel, a lane or the menu; True when a generation
        started."""
        action = Action(action)
        sel = self.lanes.selected
        region = self.lanes.selected_region
        try:
            if action == Action.ARRANGE and not self.gen.busy:
                prompts = self.dialogs.arrangement()
                return bool(prompts) and self.gen.start_arrangement(prompts)
            job = self.ctl.job_for_action(action.value, sel,
                                          region[1] if region and region[0] == sel else None,
                                          busy=self.gen.busy)
        except (RiffwrightError, KeyError) as e:
            self.message(str(e) if isinstance(e, RiffwrightError) else "that lane no longer exists")
            return False
        return job is not None and self.gen.start(job)

    def _gen_started(self, job) -> None:
        self.focus_lanes()  # the clicked button is disabled now: keys go to the transport
        self.lanes.prepare_rows(job.takes)
        self.job_status.started()
        self.panel.set_busy(True)
        self._update_actions()

    def _gen_stopped(self) -> None:
        self.lanes.release_rows()
        self.job_status.show_running(False)
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
            self.job_status.cancelling()
        else:
            self.focus_lanes()

    # ------------------------------------------------------------------ keyboard, dialogs
    def focus_lanes(self) -> None:
        """Give the keyboard to the lanes: Space, arrows, Delete and the edit keys act there."""
        self.lanes.setFocus(Qt.OtherFocusReason)

    def focus_prompt(self) -> None:
        self.dock.show()
        self.panel.prompt.setFocus(Qt.ShortcutFocusReason)

    def show_provenance(self, tid: str) -> None:
        def regenerate():
            self.lanes.select(tid)
            self.run_action(Action.REGENERATE)

        self.dialogs.provenance(self.session.track(tid), regenerate)

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
        if not self.sessions.confirm_discard():
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
    w.follower.show_position(w.transport.position())  # the clock's bar|beat, counted anew


_LANES = (MainWindow._refresh_reference_choices, MainWindow._sync_length_rule)
_E = SessionEvent
# (event, attribute) -> what the window shows again
_FOLLOW = {
    (_E.TRACK_ADDED, None): _LANES,
    (_E.TRACK_REMOVED, None): (*_LANES, lambda w: w.edits.clamp_playhead()),
    (_E.TRACK_CHANGED, "in_context"): _LANES,
    (_E.TRACK_CHANGED, "role"): _LANES,
    (_E.TRACK_CHANGED, "name"): (MainWindow._refresh_reference_choices,),
    (_E.SESSION_CHANGED, "recipe"): (_show_recipe, MainWindow._sync_length_rule),
    (_E.SESSION_CHANGED, "loop"): (MainWindow._sync_length_rule,),
    **{(_E.SESSION_CHANGED, a): (_show_meter,) for a in ("tempo", "meter", "bar_start", "key")},
}
