"""The main window: lanes in the middle, the prompt panel on the right, transport on top.

It wires views to the controller and the engine bridge; it holds no global state. Dialogs
only appear in the menu slots — every operation has a plain method (`import_paths`,
`save_to`, `open_path`, `export_stems_to`, `export_dawproject_to`, `run_action`) that the
tests and the benchmark drive directly.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.bridge import EngineBridge, list_models
from app.controller import (
    DEFAULT_RECIPE,
    ActionError,
    SessionController,
    command_line,
    import_files,
    import_files_with_peaks,
    job_fraction,
    recipe_lines,
)
from app.lanes import LaneView, fmt_duration, fmt_time
from app.panel import GuidancePanel
from app.transport import Transport
from engine.document.session import (
    Session,
    SetSessionAttr,
    UndoStack,
    autosave_snapshot,
    discard_autosave,
    recovery_candidates,
)
from engine.document.tempo import estimate_tempo
from engine.errors import RiffwrightError
from engine.service import MODEL_DEFAULT_KEYS

KEYS = ["", "C", "Cm", "C#", "C#m", "D", "Dm", "Eb", "Ebm", "E", "Em", "F", "Fm", "F#", "F#m",
        "G", "Gm", "Ab", "Abm", "A", "Am", "Bb", "Bbm", "B", "Bm"]
AUDIO_FILTER = "Audio (*.wav *.flac *.aif *.aiff *.ogg *.mp3);;All files (*)"
MAX_RECENT = 8
MIN_SIZE = (640, 460)  # the smallest window that still shows the Generate button

# keys that belong to the transport and the edit menu whatever widget has the focus, except
# where text is typed (the prompt, a lane's name): Space, undo/redo, zoom to fit
_TRANSPORT_KEYS = (QKeySequence("Space"), QKeySequence(QKeySequence.Undo),
                   QKeySequence("Ctrl+Shift+Z"), QKeySequence(QKeySequence.Redo),
                   QKeySequence("Ctrl+0"), QKeySequence("Home"))


class TransportKeys(QObject):
    """Event filter for number boxes and lists (tempo, meter, key, steps, seed…): their
    editors would swallow Space (blanking the tempo) and Ctrl+Z; in every DAW those keys
    reach the transport and the edit menu. Enter commits the value and hands the keyboard
    back to the lanes, as Ableton's and Bitwig's number fields do."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, ev):
        t = ev.type()
        if t == QEvent.ShortcutOverride:
            if ev.key() in (Qt.Key_Return, Qt.Key_Enter) and not ev.modifiers():
                ev.accept()  # Enter commits the value here (it is Stop elsewhere)
                return True
            seq = QKeySequence(ev.keyCombination())
            if any(seq.matches(k) == QKeySequence.ExactMatch for k in _TRANSPORT_KEYS):
                ev.ignore()  # not for the editor: the window's shortcut runs
                return True
        elif t == QEvent.KeyPress and ev.key() in (Qt.Key_Return, Qt.Key_Enter):
            if isinstance(obj, QAbstractSpinBox):
                obj.interpretText()
            self.window.focus_lanes()
            return True
        return False


class MainWindow(QMainWindow):
    sig_session_replaced = Signal(object)  # the new Session
    sig_generation_done = Signal(str)  # "finished", "cancelled", "error"
    sig_message = Signal(str)  # every message shown to the user

    def __init__(self, settings: QSettings, bridge: EngineBridge, transport: Transport,
                 session: Session, autosave_root: Path, export_dir: Path,
                 modal_messages: bool = True):
        super().__init__()
        self.settings = settings
        self.bridge = bridge
        self.transport = transport
        self.autosave_root = Path(autosave_root)
        self.export_dir = Path(export_dir)
        self.modal_messages = modal_messages
        self.last_message = ""
        self.session = session
        self.stack = UndoStack(session)
        self.ctl = SessionController(session, self.stack)
        self.autosave_slot = uuid.uuid4().hex[:12]
        self._taps: list[float] = []
        self._arrange_queue: list[str] = []
        self._gen_started = 0.0
        self._autosave_thread: threading.Thread | None = None
        self._autosave_error = ""
        self._import_worker = None
        # guidance/steps of the loaded model, adopted by recipes that still hold the old ones
        self._model_defaults = {k: DEFAULT_RECIPE[k] for k in MODEL_DEFAULT_KEYS}
        self.setWindowTitle("Riffwright")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.lanes = LaneView(session)
        self.lanes.drag_file_provider = self._drag_file
        self.setCentralWidget(self.lanes)
        self.panel = GuidancePanel()
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
        self._build_actions()
        self._build_toolbar()
        self._build_status()
        self._build_menus()
        self._connect()
        self._bind_session(session, fresh=True)
        self.setMinimumSize(*MIN_SIZE)
        self._keys = TransportKeys(self)
        for w in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            w.installEventFilter(self._keys)

        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(30_000)
        self.autosave_timer.timeout.connect(self.autosave_now)
        self.autosave_timer.start()
        self.restore_layout()

    # ------------------------------------------------------------------ building
    def _act(self, text, slot, shortcut=None, tip=None) -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.WindowShortcut)
        if tip:
            a.setToolTip(tip)
            a.setStatusTip(tip)
        a.triggered.connect(lambda _c=False: slot())
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        A = self._act
        self.a_new = A("&New session", self.new_session, QKeySequence.New)
        self.a_open = A("&Open session…", self.open_dialog, QKeySequence.Open)
        self.a_save = A("&Save", self.save, QKeySequence.Save)
        self.a_save_as = A("Save &as…", self.save_as_dialog, QKeySequence.SaveAs)
        self.a_import = A("&Import audio…", self.import_dialog, "Ctrl+I",
                          "Import audio files as context lanes")
        self.a_export = A("&Export stems and mix…", lambda: self.export_dialog(False), "Ctrl+E",
                          "All stems and the mix as 24-bit WAV, aligned to zero")
        self.a_export_sel = A("Export &selected stem…", lambda: self.export_dialog(True),
                              "Ctrl+Shift+E")
        self.a_export_daw = A("Export &DAWproject…", self.export_daw_dialog, "Ctrl+Alt+E",
                              "For Bitwig, Studio One, Cubase")
        self.a_quit = A("&Quit", self.close, QKeySequence.Quit)
        self.a_undo = A("&Undo", self.undo, QKeySequence.Undo)
        self.a_redo = A("&Redo", self.redo, "Ctrl+Shift+Z")
        self.a_delete = A("&Delete region / lane", self.delete_selected, QKeySequence.Delete)
        self.a_play = A("Play / pause", self.transport_toggle, "Space", "Play or pause (Space)")
        self.a_stop = A("Stop", self.transport_stop, "Return", "Stop and return (Enter)")
        self.a_home = A("Go to start", lambda: self.seek(0.0), "Home")
        self.a_loop = A("Loop playback", self._loop_toggled, "L", "Loop the loop region (L)")
        self.a_loop.setCheckable(True)
        self.a_loop.setChecked(True)
        self.a_tap = A("Tap tempo", self.tap, "T", "Tap the beat to set the tempo (T)")
        self.a_zoom_in = A("Zoom in", lambda: self.lanes.zoom(0.5), "Ctrl++")
        self.a_zoom_out = A("Zoom out", lambda: self.lanes.zoom(2.0), "Ctrl+-")
        self.a_fit = A("Zoom to fit", self.lanes.fit, "Ctrl+0")
        self.a_cancel = A("Cancel generation", self.cancel_generation, "Escape")
        self.a_gen = {
            "generate": A("&Generate", lambda: self.run_action("generate"), "Ctrl+G"),
            "inpaint": A("&Inpaint region", lambda: self.run_action("inpaint"), "Ctrl+R"),
            "vary": A("&Vary", lambda: self.run_action("vary"), "Ctrl+Shift+V"),
            "continue": A("&Continue", lambda: self.run_action("continue"), "Ctrl+Shift+C"),
            "regenerate": A("Re&generate (same recipe)", lambda: self.run_action("regenerate"),
                            "Ctrl+Shift+G"),
            "use_context": A("&Use as context", lambda: self.run_action("use_context"), "Ctrl+U"),
            "arrange": A("&Arrange…", lambda: self.run_action("arrange"), "Ctrl+Shift+A"),
        }
        self.a_next_take = A("Switch &take (A/B)", self.switch_take, "Ctrl+B",
                             "Hear the selected take, or the next take of its group")
        self.a_region_here = A("Add inpaint &region at playhead", self.region_at_playhead,
                               "Ctrl+Shift+R", "A region of one bar (1 s without a tempo) "
                                               "on the selected lane, from the playhead")
        self.a_prompt = A("Edit the &prompt", self.focus_prompt, "Ctrl+P")
        self.a_lanes = A("Focus the lanes", self.focus_lanes, "Ctrl+1")
        self.a_all_takes = A("Exports include every take", lambda: self.settings.setValue(
            "export_all_takes", self.a_all_takes.isChecked()), tip=(
            "Off: the mix holds the take you hear of each part, and the DAWproject mutes the "
            "others. On: every take is mixed and unmuted."))
        self.a_all_takes.setCheckable(True)
        self.a_all_takes.setChecked(str(self.settings.value("export_all_takes", "false"))
                                    .lower() == "true")
        self.a_shortcuts = A("Keyboard shortcuts", self.show_shortcuts, "F1")
        self.a_about = A("&About Riffwright", self.show_about)
        self.a_models = A("&Models…", self.open_models, "Ctrl+M",
                          "See, add and remove model bundles; pick the one to use")

    def _build_toolbar(self) -> None:
        tb = QToolBar("Transport")
        tb.setObjectName("transportBar")
        tb.setMovable(False)
        self.addToolBar(Qt.TopToolBarArea, tb)
        # a tool button shows its action's icon text, and keeps showing it when the action
        # changes (a text set on the button itself is lost on the first toggle)
        self.a_play.setIconText("▶")
        self.a_stop.setIconText("■")
        self.a_loop.setIconText("⟲ Loop")
        self.a_tap.setIconText("Tap")
        self.b_play = QToolButton()
        self.b_play.setDefaultAction(self.a_play)
        self.b_stop = QToolButton()
        self.b_stop.setDefaultAction(self.a_stop)
        self.b_loop = QToolButton()
        self.b_loop.setDefaultAction(self.a_loop)
        for b in (self.b_play, self.b_stop, self.b_loop):
            b.setFocusPolicy(Qt.NoFocus)
            tb.addWidget(b)
        self.clock = QLabel("0:00.0")
        self.clock.setObjectName("clock")
        self.clock.setMinimumWidth(170)
        self.clock.setToolTip("Play position: minutes:seconds and bar|beat")
        tb.addWidget(self.clock)
        tb.addSeparator()
        tb.addWidget(QLabel(" Tempo "))
        self.tempo = QDoubleSpinBox()
        self.tempo.setRange(0, 300)
        self.tempo.setDecimals(1)
        self.tempo.setSpecialValueText("—")
        self.tempo.setSuffix(" BPM")
        self.tempo.setToolTip("Session tempo (— = none: the grid is in seconds)")
        self.tempo.setKeyboardTracking(False)
        tb.addWidget(self.tempo)
        self.b_tap = QToolButton()
        self.b_tap.setDefaultAction(self.a_tap)
        tb.addWidget(self.b_tap)
        self.b_est = QToolButton()
        self.b_est.setText("Detect")
        self.b_est.setToolTip("Estimate the tempo from the context lanes")
        self.b_est.clicked.connect(self.estimate_tempo)
        tb.addWidget(self.b_est)
        self.meter_num = QSpinBox()
        self.meter_num.setRange(1, 32)
        self.meter_num.setValue(4)
        self.meter_num.setToolTip("Beats per bar")
        self.meter_den = QComboBox()
        for d in (2, 4, 8, 16):
            self.meter_den.addItem(str(d), d)
        self.meter_den.setCurrentIndex(1)
        self.meter_den.setToolTip("Beat unit")
        tb.addWidget(QLabel("  "))
        tb.addWidget(self.meter_num)
        tb.addWidget(QLabel("/"))
        tb.addWidget(self.meter_den)
        tb.addWidget(QLabel("  Key "))
        self.key = QComboBox()
        self.key.addItems(KEYS)
        self.key.setToolTip("Session key (used in exported file names)")
        tb.addWidget(self.key)
        tb.addSeparator()
        for a, t in ((self.a_zoom_out, "−"), (self.a_zoom_in, "+"), (self.a_fit, "Fit")):
            a.setIconText(t)
            b = QToolButton()
            b.setDefaultAction(a)
            b.setFocusPolicy(Qt.NoFocus)
            tb.addWidget(b)
        for b in (self.b_tap, self.b_est):
            b.setFocusPolicy(Qt.NoFocus)
        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().horizontalPolicy().Expanding,
                             spacer.sizePolicy().verticalPolicy().Preferred)
        tb.addWidget(spacer)
        tb.addWidget(QLabel("Output "))
        self.out_device = QComboBox()
        self.out_device.setToolTip("Audio output device")
        self.out_device.setMinimumWidth(140)
        tb.addWidget(self.out_device)
        self._fill_devices()

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

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.a_new, self.a_open):
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        m.addSeparator()
        for a in (self.a_save, self.a_save_as):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.a_import)
        m.addSeparator()
        for a in (self.a_export, self.a_export_sel, self.a_export_daw, self.a_all_takes):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.a_quit)
        m = mb.addMenu("&Edit")
        m.addAction(self.a_undo)
        m.addAction(self.a_redo)
        m.addSeparator()
        m.addAction(self.a_delete)
        m.addAction(self.a_region_here)
        m.addAction(self.a_next_take)
        m = mb.addMenu("&Generate")
        for a in self.a_gen.values():
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.a_cancel)
        m.addSeparator()
        m.addAction(self.a_models)
        m = mb.addMenu("&Transport")
        for a in (self.a_play, self.a_stop, self.a_home, self.a_loop, self.a_tap):
            m.addAction(a)
        m = mb.addMenu("&View")
        for a in (self.a_zoom_in, self.a_zoom_out, self.a_fit):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.a_lanes)
        m.addAction(self.a_prompt)
        m.addAction(self.dock.toggleViewAction())
        m = mb.addMenu("&Help")
        m.addAction(self.a_shortcuts)
        m.addAction(self.a_about)
        self._fill_recent()

    def _connect(self) -> None:
        L = self.lanes
        L.sig_seek.connect(self.seek)
        L.sig_loop_changed.connect(self._guard(self.ctl.set_loop))
        L.sig_region_drawn.connect(self._guard(self.ctl.add_region))
        L.sig_region_moved.connect(self._guard(self.ctl.move_region))
        L.sig_region_deleted.connect(self._guard(self.ctl.delete_region))
        L.sig_track_attr.connect(self._guard(self.ctl.set_track_attr))
        L.sig_merge_closed.connect(lambda: self.stack.close_merge())
        L.sig_take_activated.connect(self._guard(self.ctl.activate_take))
        L.sig_delete_track.connect(self._guard(self.ctl.delete_track))
        L.sig_show_provenance.connect(self.show_provenance)
        L.sig_action.connect(self.run_action)
        L.sig_selected.connect(lambda _t: self._update_actions())
        P = self.panel
        P.sig_recipe_changed.connect(self._recipe_changed)
        P.sig_merge_closed.connect(lambda: self.stack.close_merge())
        P.sig_action.connect(self.run_action)
        P.sig_reference_file.connect(self.add_reference_file)
        P.sig_model_chosen.connect(self.choose_model)
        self.tempo.valueChanged.connect(self._guard(lambda v: self.ctl.set_tempo(v or None)))
        self.meter_num.valueChanged.connect(self._guard(self._meter_changed))
        self.meter_den.currentIndexChanged.connect(self._guard(self._meter_changed))
        self.key.currentTextChanged.connect(self._guard(lambda k: self.ctl.set_key(k or None)))
        self.out_device.activated.connect(self._device_chosen)
        B = self.bridge
        B.sig_model_loading.connect(lambda p: self._model_status(f"model: loading {Path(p).name}…"))
        B.sig_model_ready.connect(self._model_ready)
        B.sig_model_failed.connect(self._model_failed)
        B.sig_progress.connect(self._progress)
        B.sig_finished.connect(self._finished)
        B.sig_cancelled.connect(self._cancelled)
        B.sig_error.connect(self._gen_error)
        T = self.transport
        T.sig_position.connect(self._position)
        T.sig_state.connect(self._transport_state)
        T.sig_silent.connect(lambda _r: self._update_silent())
        self.stack.subscribe(self._stack_changed)

    def _guard(self, fn):
        """Run `fn`, turning user-fixable errors into a message."""

        def wrapped(*a):
            try:
                fn(*a)
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
        if not session.recipe:
            session.recipe = {**DEFAULT_RECIPE, **self.panel.recipe(),
                              "prompt": "", "reference_track": None}
            session.recipe.pop("model", None)
        self._refresh_reference_choices()
        self.panel.set_recipe(session.recipe)
        self._sync_length_rule()
        self._sync_transport_widgets()
        self._update_title()
        self._update_actions()
        self.sig_session_replaced.emit(session)

    def _sync_length_rule(self) -> None:
        recipe = self.session.recipe or DEFAULT_RECIPE
        why = self.ctl.generate_span(recipe)[2]
        self.panel.set_length_rule(self.ctl.length_rule(recipe), why == "length")

    def _clamp_playhead(self) -> None:
        """After lanes go or shrink, a playhead past the end goes back to the end."""
        end = self.session.seconds
        if self.transport.position() > end:
            self.transport.seek(end)

    def _session_event(self, event: str, p: dict) -> None:
        if event in ("track_added", "track_removed") or (
                event == "track_changed" and p.get("attr") in ("in_context", "role")):
            self._refresh_reference_choices()
            self.transport.remix()
            self._sync_length_rule()
            if event == "track_removed":
                self._clamp_playhead()
        elif event == "track_changed":
            if p.get("attr") in ("mute", "solo", "gain_db", "offset"):
                self.transport.remix()
            if p.get("attr") == "name":
                self._refresh_reference_choices()
        elif event == "session_changed":
            attr = p.get("attr")
            if attr in ("tempo", "meter", "key"):
                self._sync_transport_widgets()
            elif attr == "recipe":
                self.panel.set_recipe(self.session.recipe)
                self._sync_length_rule()
            elif attr == "active_takes":
                self.transport.remix()
            elif attr == "loop":
                self.transport._apply_loop()
                self._sync_length_rule()
        self._update_title()
        self._update_actions()

    def _refresh_reference_choices(self) -> None:
        cur = (self.session.recipe or {}).get("reference_track")
        self.panel.set_reference_choices([(t.id, t.name) for t in self.session.tracks], cur)

    def _sync_transport_widgets(self) -> None:
        s = self.session
        for w in (self.tempo, self.meter_num, self.meter_den, self.key):
            w.blockSignals(True)
        self.tempo.setValue(s.tempo or 0)
        self.meter_num.setValue(s.meter[0])
        self.meter_den.setCurrentIndex(max(0, self.meter_den.findData(s.meter[1])))
        self.key.setCurrentText(s.key or "")
        for w in (self.tempo, self.meter_num, self.meter_den, self.key):
            w.blockSignals(False)

    def _meter_changed(self, *_):
        self.ctl.set_meter(self.meter_num.value(), self.meter_den.currentData())

    def _recipe_changed(self, key, value, merge) -> None:
        new = {**self.session.recipe, key: value}
        cmd = SetSessionAttr(self.session, "recipe", new, merge=merge,
                             text=f"Change {key.replace('_', ' ')}")
        cmd.merge_key = ("recipe", key) if merge else None
        self.stack.push(cmd)

    def _stack_changed(self) -> None:
        self.a_undo.setEnabled(self.stack.can_undo())
        self.a_redo.setEnabled(self.stack.can_redo())
        self.a_undo.setText(f"&Undo {self.stack.undo_text()}".strip())
        self.a_redo.setText(f"&Redo {self.stack.redo_text()}".strip())
        self._update_title()

    def _update_title(self) -> None:
        s = self.session
        name = s.path.name if s.path else s.title
        self.setWindowTitle(f"{'● ' if s.dirty else ''}{name} — Riffwright")

    def _update_actions(self) -> None:
        busy = self.bridge.busy
        sel = self.lanes.selected
        t = None
        if sel:
            try:
                t = self.session.track(sel)
            except KeyError:
                t = None
        enable = {
            "generate": not busy,
            "arrange": not busy,
            "inpaint": not busy and t is not None and bool(t.regions),
            "vary": not busy and t is not None,
            "continue": not busy and t is not None,
            "regenerate": not busy and t is not None and bool(t.provenance),
            "use_context": t is not None and t.role == "generated",
        }
        for k, on in enable.items():
            self.a_gen[k].setEnabled(on)
            self.panel.buttons[k].setEnabled(on)
        self.a_export_sel.setEnabled(t is not None)

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
        paths, _ = QFileDialog.getOpenFileNames(self, "Import audio", self._last_dir(),
                                                AUDIO_FILTER)
        if paths:
            self.settings.setValue("last_dir", str(Path(paths[0]).parent))
            self.import_paths(paths, wait=False)

    def add_reference_file(self, path: str) -> None:
        ok, errors = import_files([path], self.session.sample_rate)
        if errors:
            self.message(errors[0])
            return
        name, audio, src = ok[0]
        [t] = self.ctl.add_audio_tracks([(f"ref: {name}", audio)], role="reference",
                                        source_files=[src])
        self._recipe_changed("reference_track", t.id, False)
        self.status(f"{name} is the audio reference")

    def _last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

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
        if not self.confirm_discard():
            return
        self.transport.stop()
        discard_autosave(self.autosave_root, self.autosave_slot)
        self._replace(Session(self.session.sample_rate))

    def _replace(self, session: Session) -> None:
        self.autosave_slot = uuid.uuid4().hex[:12]
        self._bind_session(session, fresh=False)

    def open_path(self, path: str | Path) -> bool:
        try:
            s = Session.load(path)
        except RiffwrightError as e:
            self.message(str(e))
            return False
        self.transport.stop()
        discard_autosave(self.autosave_root, self.autosave_slot)
        self._replace(s)
        self._add_recent(str(Path(path)))
        self.status(f"opened {Path(path).name}")
        return True

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        d = QFileDialog.getExistingDirectory(self, "Open session folder", self._last_dir())
        if d:
            self.open_path(d)

    def save_to(self, folder: str | Path) -> bool:
        try:
            self.session.title = Path(folder).name
            self.session.save(folder)
        except (OSError, RiffwrightError) as e:
            self.message(f"cannot save the session: {e}")
            return False
        discard_autosave(self.autosave_root, self.autosave_slot)
        self._add_recent(str(Path(folder)))
        self._update_title()
        self.status(f"saved {folder}")
        return True

    def save(self) -> bool:
        if self.session.path is None:
            return self.save_as_dialog()
        return self.save_to(self.session.path)

    def save_as_dialog(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save session as (a folder)",
                                              str(Path(self._last_dir()) / "My song"))
        return self.save_to(path) if path else False

    def autosave_now(self, wait: bool = False) -> Path | None:
        """Snapshot the session and write it to the autosave folder in a background thread.

        A failed write (full disk...) is shown in the status bar on the next tick and tried
        again every tick; the thread never dies silently."""
        if self._autosave_error:
            self.status(f"autosave failed, retrying: {self._autosave_error}")
        if not self.session.dirty or not self.session.tracks:
            return None
        if self._autosave_thread is not None and self._autosave_thread.is_alive():
            return None
        write = autosave_snapshot(self.session, self.autosave_root, self.autosave_slot)
        folder = self.autosave_root / self.autosave_slot

        def run():
            try:
                write()
                self._autosave_error = ""
            except Exception as e:  # noqa: BLE001 - any failure is reported, then retried
                self._autosave_error = str(e) or type(e).__name__

        self._autosave_thread = threading.Thread(target=run, daemon=True,
                                                 name="riffwright-autosave")
        self._autosave_thread.start()
        if wait:
            self._autosave_thread.join()
        return folder

    def offer_recovery(self, ask: bool = True) -> bool:
        """Offer the newest autosave left by a crash; returns True when one was opened."""
        cands = recovery_candidates(self.autosave_root)
        cands = [c for c in cands if c[0].name != self.autosave_slot]
        if not cands:
            return False
        folder, info = cands[0]
        if ask:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("time", 0)))
            r = QMessageBox.question(
                self, "Recover session",
                f"Riffwright did not close cleanly. Recover “{info.get('title', 'Untitled')}” "
                f"from its autosave of {when}?")
            if r != QMessageBox.Yes:
                for f, _ in cands:
                    discard_autosave(self.autosave_root, f.name)
                return False
        try:
            s = Session.load(folder)
        except RiffwrightError as e:
            self.message(f"the autosave could not be read: {e}")
            for f, _ in cands:  # never offered again on the next start
                discard_autosave(self.autosave_root, f.name)
            return False
        origin = info.get("origin")
        s.path = Path(origin) if origin else None
        s.dirty = True
        self._replace(s)
        self.session.dirty = True
        for f, _ in cands:
            discard_autosave(self.autosave_root, f.name)
        self.status("recovered the autosaved session")
        self._update_title()
        return True

    def _add_recent(self, path: str) -> None:
        rec = [p for p in self.recent() if p != path]
        rec.insert(0, path)
        self.settings.setValue("recent", rec[:MAX_RECENT])
        self.settings.setValue("last_dir", str(Path(path).parent))
        self._fill_recent()

    def recent(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent():
            self.recent_menu.addAction(Path(p).name, lambda p=p: self.confirm_discard()
                                       and self.open_path(p)).setToolTip(p)
        self.recent_menu.setEnabled(bool(self.recent()))

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
                                 all_takes=self.a_all_takes.isChecked())
        except (OSError, RiffwrightError) as e:
            self.message(f"export failed: {e}")
            return []
        self.status(f"exported {len(files)} file(s) to {folder}")
        return files

    def export_dialog(self, selected_only: bool) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export stems to folder", self._last_dir())
        if d:
            self.export_stems_to(d, selected_only)

    def export_dawproject_to(self, path: str | Path) -> Path | None:
        from engine.document.dawproject import export_dawproject

        if not self.session.tracks:
            self.message("nothing to export: the session has no lanes")
            return None
        try:
            out = export_dawproject(self.session, path, all_takes=self.a_all_takes.isChecked())
        except (OSError, RiffwrightError) as e:
            self.message(f"export failed: {e}")
            return None
        self.status(f"wrote {out}")
        return out

    def export_daw_dialog(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Export DAWproject",
                                           str(Path(self._last_dir()) / f"{self.session.title}.dawproject"),
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

    # ------------------------------------------------------------------ transport
    def transport_toggle(self) -> None:
        self.transport.toggle()

    def transport_stop(self) -> None:
        self.transport.stop()

    def seek(self, seconds: float) -> None:
        self.transport.seek(seconds)

    def _loop_toggled(self) -> None:
        self.transport.set_loop_enabled(self.a_loop.isChecked())

    def _position(self, sec: float) -> None:
        self.lanes.set_playhead(sec)
        bb = self.session.bars_beats(sec)
        self.clock.setText(f"{fmt_time(sec)}" + (f"   {bb}" if bb else ""))

    def _transport_state(self, state: str) -> None:
        self.a_play.setText("Pause" if state == "playing" else "Play")
        self.b_play.setText("❚❚" if state == "playing" else "▶")
        self._update_silent()

    def _update_silent(self) -> None:
        r = self.transport.silent_reason
        self.silent.setText(f"silent — {r}" if r else "")
        self.silent.setToolTip(r or "")

    def _fill_devices(self) -> None:
        self.out_device.clear()
        devs = self.transport.output_devices()
        if not devs:
            self.out_device.addItem("no output", None)
            self.out_device.setEnabled(False)
            return
        self.out_device.addItem("system default", None)
        for i, name in devs:
            self.out_device.addItem(name, i)
        saved = self.settings.value("output_device")
        if saved is not None:
            i = self.out_device.findText(str(saved))
            if i >= 0:
                self.out_device.setCurrentIndex(i)
                self.transport.set_device(self.out_device.itemData(i))

    def _device_chosen(self, i: int) -> None:
        self.transport.set_device(self.out_device.itemData(i))
        self.settings.setValue("output_device", self.out_device.itemText(i))
        self._update_silent()

    def tap(self) -> None:
        now = time.perf_counter()
        self._taps = [t for t in self._taps if now - t < 3.0] + [now]
        if len(self._taps) >= 3:
            d = [b - a for a, b in zip(self._taps, self._taps[1:], strict=False)]
            bpm = 60.0 / (sum(d) / len(d))
            if 30 <= bpm <= 300:
                cmd = SetSessionAttr(self.session, "tempo", round(bpm, 1), merge=True,
                                     text="Tap tempo")
                self.stack.push(cmd)
        self.status(f"tap {len(self._taps)}" + (f": {self.session.tempo:.1f} BPM"
                                                if self.session.tempo else ""))

    def estimate_tempo(self, quiet: bool = False) -> float | None:
        tracks = self.ctl.context_tracks()
        if not tracks:
            if not quiet:
                self.message("import a context clip first: the tempo is estimated from it")
            return None
        mix = self.session.render(tracks, 0, min(self.session.seconds, 60.0), apply_mute=False)
        bpm = estimate_tempo(mix, self.session.sample_rate)
        if bpm is None:
            if not quiet:
                self.message("could not estimate a tempo from this context (too short or no "
                             "clear beat)")
            return None
        self.ctl.set_tempo(bpm)
        self.status(f"estimated tempo {bpm:.1f} BPM (tap or type to correct)")
        return bpm

    # ------------------------------------------------------------------ model
    def _model_status(self, text: str) -> None:
        self.device_status.setText(text)

    def _model_ready(self, name: str, device: str) -> None:
        info = self.bridge.generator
        self._adopt_model_defaults(info.defaults if info else {})
        self.panel.set_text_prior_available(bool(info and info.text_prior))
        self.device_status.setText(f"model: {name}")
        self.panel.set_device(device, True)
        self.panel.set_models(list_models(), self.bridge.model_path, name)
        self._update_actions()

    def _adopt_model_defaults(self, defaults: dict) -> None:
        """Take the loaded bundle's guidance and steps wherever the recipe still holds the
        previous model's (or the app's) value: each model has the guidance that suits it,
        and what the musician set by hand stays."""
        prev = self._model_defaults
        recipe = dict(self.session.recipe or {})
        changed = {k: v for k, v in defaults.items()
                   if k in prev and recipe.get(k, prev[k]) == prev[k] and v != prev[k]}
        self._model_defaults = {**prev, **defaults}
        if changed:
            self.session.recipe = {**recipe, **changed}
            self.panel.set_recipe(self.session.recipe)

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
    def run_action(self, action: str) -> bool:
        """Start an action from the panel/menu; returns True when a generation started."""
        sel = self.lanes.selected
        try:
            if action == "use_context":
                if not sel:
                    raise ActionError("select a generated take first")
                self.ctl.use_as_context(sel)
                return False
            if action == "use_reference":
                self._recipe_changed("reference_track", sel, False)
                return False
            if self.bridge.busy:
                raise ActionError("a generation is already running (Esc cancels it)")
            recipe = dict(self.session.recipe or self.panel.recipe())
            if action == "arrange":
                prompts = self.ask_arrangement()
                if not prompts:
                    return False
                return self.start_arrangement(prompts)
            if not recipe.get("seed_locked") and action != "regenerate":
                # a fresh seed per generation; not an undo step (provenance keeps the seed)
                recipe["seed"] = random.randint(0, 2**31 - 1)
                self.session.recipe = {**self.session.recipe, "seed": recipe["seed"]}
                self.panel.set_recipe(self.session.recipe)
            if action == "regenerate":
                job = self.ctl.regenerate_job(self.ctl.selected_track(sel).id)
            else:
                rid = None
                if self.lanes.selected_region and self.lanes.selected_region[0] == sel:
                    rid = self.lanes.selected_region[1]
                job = self.ctl.build_job(action, recipe, sel, rid)
        except (RiffwrightError, KeyError) as e:
            self.message(str(e) if isinstance(e, RiffwrightError) else "that lane no longer exists")
            return False
        job.recipe = recipe
        return self._start(job)

    def ask_arrangement(self) -> list[str]:
        dlg = QDialog(self)
        dlg.setWindowTitle("Arrange")
        lay = QVBoxLayout(dlg)
        lay.addWidget(QLabel("One prompt per line. Each part is generated in turn and hears "
                             "the context plus the parts before it."))
        edit = QPlainTextEdit("drums, tight funk groove\nelectric bass\nrhodes chords")
        lay.addWidget(edit)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(dlg.accept)
        bb.rejected.connect(dlg.reject)
        lay.addWidget(bb)
        if dlg.exec() != QDialog.Accepted:
            return []
        return [x.strip() for x in edit.toPlainText().splitlines() if x.strip()]

    def start_arrangement(self, prompts: list[str]) -> bool:
        self._arrange_queue = list(prompts)
        return self._next_arrangement_part()

    def _next_arrangement_part(self) -> bool:
        if not self._arrange_queue:
            return False
        prompt = self._arrange_queue.pop(0)
        recipe = {**(self.session.recipe or {}), "prompt": prompt, "takes": 1}
        try:
            job = self.ctl.build_job("arrange", recipe)
        except RiffwrightError as e:
            self._arrange_queue = []
            self.message(str(e))
            return False
        job.name = prompt
        job.recipe = recipe
        return self._start(job)

    def _start(self, job) -> bool:
        if not self.bridge.generate(job):
            return False
        self._gen_started = time.perf_counter()
        self._gen_stereo = float(job.request.get("stereo_width") or 0) > 0
        self.focus_lanes()  # the clicked button is disabled now: keys go to the transport
        self.lanes.prepare_rows(int(job.request.get("takes") or 1))
        self.progress.setValue(0)
        self.progress.show()
        self.progress_label.setText("starting…")
        self.progress_label.show()
        self.b_cancel.show()
        self.panel.set_busy(True)
        self._update_actions()
        self.status(f"generating: {job.name}")
        return True

    def _progress(self, p) -> None:
        """One bar and one ETA for the whole job (the engine's own ETA restarts with every
        phase: sampling, the stereo pass, decoding)."""
        total = max(1, p.total)
        frac = min(1.0, p.step / total)
        overall = job_fraction(p.stage, frac, getattr(self, "_gen_stereo", False))
        self.progress.setValue(int(overall * 100))
        self.progress.setFormat(f"{p.stage} {p.step}/{p.total}")
        elapsed = time.perf_counter() - self._gen_started
        eta = ""
        if overall >= 0.03 and elapsed >= 1.0:
            left = elapsed * (1.0 - overall) / overall
            eta = f" · about {fmt_duration(left)} left"
        if p.stage in ("sample", "stereo"):
            what = "stereo pass" if p.stage == "stereo" else "step"
            self.progress_label.setText(f"{what} {p.step}/{p.total}{eta}")
        else:
            self.progress_label.setText((p.message or p.stage) + eta)

    def _end_generation(self) -> None:
        self.lanes.release_rows()
        self.progress.hide()
        self.progress_label.hide()
        self.b_cancel.hide()
        self.panel.set_busy(False)
        self._update_actions()

    def _finished(self, job, stems) -> None:
        tracks = self.ctl.land_results(job, stems, job.recipe)  # into the reserved rows
        self._end_generation()
        if job.action == "arrange" and tracks:
            self.ctl.use_as_context(tracks[0].id)
        if tracks:
            self.lanes.select(tracks[0].id)
        dt = time.perf_counter() - self._gen_started
        self.status(f"{len(tracks)} take(s) of “{job.name}” in {dt:.1f} s — "
                    "click a take's A/B button to switch")
        if job.action == "arrange" and self._arrange_queue:
            self._next_arrangement_part()
            return
        self.sig_generation_done.emit("finished")

    def _cancelled(self, _job) -> None:
        self._arrange_queue = []
        self._end_generation()
        self.status("generation cancelled — nothing was added")
        self.sig_generation_done.emit("cancelled")

    def _gen_error(self, msg: str) -> None:
        self._arrange_queue = []
        if self.bridge.busy:
            self.message(msg)
            return
        self._end_generation()
        self.message(msg)
        self.sig_generation_done.emit("error")

    def cancel_generation(self) -> None:
        """Esc: cancel the running generation; otherwise leave a text field (as in a DAW)."""
        if self.bridge.busy:
            self.progress_label.setText("cancelling…")
            self.bridge.cancel()
        else:
            self.focus_lanes()

    # ------------------------------------------------------------------ keyboard
    def focus_lanes(self) -> None:
        """Give the keyboard to the lanes: Space, arrows, Delete and the edit keys act there."""
        self.lanes.setFocus(Qt.OtherFocusReason)

    def focus_prompt(self) -> None:
        self.dock.show()
        self.panel.prompt.setFocus(Qt.ShortcutFocusReason)

    def switch_take(self) -> None:
        """Ctrl+B: hear the selected take; when it is already the one heard, the next take of
        its group (selected too, so pressing again walks through the takes)."""
        sel = self.lanes.selected
        if not sel:
            self.message("select a take first (click its lane, or Up/Down)")
            return
        t = self.session.track(sel)
        if not t.take_group:
            self.message(f"{t.name} is not one of several takes")
            return
        takes = self.session.takes(t.take_group)
        if self.session.take_active(t) and len(takes) > 1:
            t = takes[(takes.index(t) + 1) % len(takes)]
            self.lanes.select(t.id)
        self._guard(self.ctl.activate_take)(t.id)

    def region_at_playhead(self) -> None:
        """Keyboard inpainting: a region of one bar (1 s without a tempo) from the playhead's
        bar on the selected lane."""
        sel = self.lanes.selected
        if not sel:
            self.message("select a lane first (click it, or Up/Down)")
            return
        s = self.session
        length = s.seconds_per_bar() if s.tempo else 1.0
        pos = self.transport.position()
        start = (pos // length) * length
        try:
            r = self.ctl.add_region(sel, start, start + length)
        except RiffwrightError as e:
            self.message(str(e))
            return
        self.lanes.select_region(sel, r.id)

    # ------------------------------------------------------------------ provenance, help
    def show_provenance(self, tid: str) -> None:
        """The take's recipe in words, the command line that makes it again (with a copy
        button), and the raw record folded away for the curious."""
        import json

        t = self.session.track(tid)
        prov = t.provenance or {}
        dlg = QDialog(self)
        dlg.setWindowTitle(f"How “{t.name}” was made")
        lay = QVBoxLayout(dlg)
        recipe = QLabel("<br>".join(recipe_lines(prov)))
        recipe.setTextFormat(Qt.RichText)
        recipe.setWordWrap(True)
        recipe.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(recipe)
        cmd = command_line(prov, t)
        lay.addWidget(QLabel("The same take from the command line:"))
        cmd_box = QPlainTextEdit(cmd)
        cmd_box.setReadOnly(True)
        cmd_box.setFixedHeight(70)
        cmd_box.setStyleSheet("font-family: monospace;")
        lay.addWidget(cmd_box)
        b_copy = QPushButton("Copy command line")
        b_copy.clicked.connect(lambda: (QGuiApplication.clipboard().setText(cmd),
                                        self.status("command line copied")))
        raw = QPlainTextEdit(json.dumps(prov, indent=2, default=str))
        raw.setReadOnly(True)
        raw.setStyleSheet("font-family: monospace;")
        raw.hide()
        b_raw = QPushButton("Show the full record")
        b_raw.setCheckable(True)
        b_raw.toggled.connect(raw.setVisible)
        b = QPushButton("Regenerate exactly")
        b.clicked.connect(lambda: (dlg.accept(), self.lanes.select(tid),
                                   self.run_action("regenerate")))
        row = QHBoxLayout()
        for w in (b_copy, b_raw, b):
            row.addWidget(w)
        lay.addLayout(row)
        lay.addWidget(raw, 1)
        dlg.resize(620, 420)
        dlg.setAttribute(Qt.WA_DeleteOnClose)
        self.provenance_dialog = dlg
        dlg.open()

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(what, keys) for every action with a shortcut, plus the lanes' own keys."""
        rows = [(a.text().replace("&", "").split(" (")[0], a.shortcut().toString(
            QKeySequence.NativeText)) for a in self.actions() if not a.shortcut().isEmpty()]
        rows += [("Select the lane above / below (lanes focused)", "Up / Down"),
                 ("Playhead one bar back / on (lanes focused)", "Left / Right"),
                 ("Scroll lanes / scroll in time / zoom", "Wheel / Shift+Wheel / Ctrl+Wheel"),
                 ("Rename a lane", "double-click its name"),
                 ("Leave a text or number field", "Enter or Esc")]
        return rows

    def show_shortcuts(self) -> None:
        rows = self.shortcut_rows()
        html = "<table cellspacing=4>" + "".join(
            f"<tr><td><b>{k}</b></td><td>{n}</td></tr>" for n, k in rows) + "</table>"
        box = QMessageBox(QMessageBox.Information, "Keyboard shortcuts", html, QMessageBox.Ok,
                          self)
        box.setTextFormat(Qt.RichText)
        box.setAttribute(Qt.WA_DeleteOnClose)
        self.shortcuts_box = box
        box.open()

    def about_text(self) -> str:
        from app.about import about_html

        return about_html(self.bridge.model_path)

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.NoIcon, "About Riffwright", self.about_text(),
                          QMessageBox.Ok, self)
        box.setTextFormat(Qt.RichText)
        box.setAttribute(Qt.WA_DeleteOnClose)
        self.about_box = box
        box.open()

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
        discard_autosave(self.autosave_root, self.autosave_slot)
        super().closeEvent(ev)
