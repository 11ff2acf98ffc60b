"""The transport bar at the top of the window: play, stop, loop, the clock, tempo (typed,
tapped or detected), meter, where bar 1 begins, key, zoom and the output device.

A view like the others: it shows the session's tempo, meter and key (`show_session`) and
reports the musician's changes as `sig_*` signals; the window turns them into controller
calls. The buttons run the window's actions (`app.actions`), so a button, its menu item and
its key are one command.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QToolBar,
    QToolButton,
    QWidget,
)

from app.actions import Action
from app.lanes import fmt_time
from engine.document.session import Session

KEYS = ["", "C", "Cm", "C#", "C#m", "D", "Dm", "Eb", "Ebm", "E", "Em", "F", "Fm", "F#", "F#m",
        "G", "Gm", "Ab", "Abm", "A", "Am", "Bb", "Bbm", "B", "Bm"]
TAP_WINDOW_S = 3.0  # taps further apart than this start a new tempo


class TapTempo:
    """Tempo from taps: the mean interval of the taps of the last few seconds."""

    def __init__(self):
        self.taps: list[float] = []

    def tap(self, now: float) -> float | None:
        """Record a tap at `now` (seconds); the tempo once three taps agree on 30–300 BPM."""
        self.taps = [t for t in self.taps if now - t < TAP_WINDOW_S] + [now]
        if len(self.taps) < 3:
            return None
        d = [b - a for a, b in zip(self.taps, self.taps[1:], strict=False)]
        bpm = 60.0 / (sum(d) / len(d))
        return bpm if 30 <= bpm <= 300 else None


def _fit(box: QWidget, widest: str) -> None:
    """A number box no wider than its widest text and its arrows: the transport bar stays one
    row, with the output device in view, on a 1400-pixel window."""
    box.setMaximumWidth(box.fontMetrics().horizontalAdvance(widest) + 40)


class TransportBar(QToolBar):
    sig_tempo = Signal(object)  # BPM, or None for no tempo
    sig_meter = Signal(int, int)  # beats per bar, beat unit
    sig_bar_start = Signal(float)  # where bar 1 begins, seconds
    sig_key = Signal(object)  # key name, or None
    sig_detect_tempo = Signal()
    sig_device = Signal(object, str)  # output device id (None: system default), its name

    def __init__(self, actions: dict[Action, QAction], parent=None):
        super().__init__("Transport", parent)
        self.setObjectName("transportBar")
        self.setMovable(False)
        self.b_play = self._button(actions[Action.PLAY])
        self.b_stop = self._button(actions[Action.STOP])
        self.b_loop = self._button(actions[Action.LOOP])
        self._build_clock()
        self.addSeparator()
        self._build_tempo(actions[Action.TAP])
        self._build_meter_and_key()
        self.addSeparator()
        for a in (Action.ZOOM_OUT, Action.ZOOM_IN, Action.FIT):
            self._button(actions[a])
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.addWidget(spacer)
        self.addWidget(QLabel("Output "))
        self.out_device = QComboBox()
        self.out_device.setToolTip("Audio output device")
        self.out_device.setMinimumWidth(140)
        self.out_device.activated.connect(lambda i: self.sig_device.emit(
            self.out_device.itemData(i), self.out_device.itemText(i)))
        self.addWidget(self.out_device)

    # ---- building
    def _button(self, action: QAction) -> QToolButton:
        """A button showing its action's icon text, which it keeps when the action changes
        (a text set on the button itself is lost on the first toggle)."""
        b = QToolButton()
        b.setDefaultAction(action)
        b.setFocusPolicy(Qt.NoFocus)
        self.addWidget(b)
        return b

    def _build_clock(self) -> None:
        self.clock = QLabel("0:00.0")
        self.clock.setObjectName("clock")
        self.clock.setMinimumWidth(170)
        self.clock.setToolTip("Play position: minutes:seconds and bar|beat")
        self.addWidget(self.clock)

    def _build_tempo(self, tap: QAction) -> None:
        self.addWidget(QLabel(" Tempo "))
        self.tempo = QDoubleSpinBox()
        self.tempo.setRange(0, 300)
        self.tempo.setDecimals(1)
        self.tempo.setSpecialValueText("—")
        self.tempo.setSuffix(" BPM")
        self.tempo.setToolTip("Session tempo (— = none: the grid is in seconds)")
        self.tempo.setKeyboardTracking(False)
        self.tempo.valueChanged.connect(lambda v: self.sig_tempo.emit(v or None))
        _fit(self.tempo, "300.0 BPM")
        self.addWidget(self.tempo)
        self.b_tap = self._button(tap)
        self.b_est = QToolButton()
        self.b_est.setText("Detect")
        self.b_est.setToolTip("Estimate the tempo from the context lanes")
        self.b_est.setFocusPolicy(Qt.NoFocus)
        self.b_est.clicked.connect(self.sig_detect_tempo.emit)
        self.addWidget(self.b_est)

    def _build_meter_and_key(self) -> None:
        self.meter_num = QSpinBox()
        self.meter_num.setRange(1, 32)
        self.meter_num.setValue(4)
        self.meter_num.setToolTip("Beats per bar")
        _fit(self.meter_num, "32")
        self.meter_den = QComboBox()
        for d in (2, 4, 8, 16):
            self.meter_den.addItem(str(d), d)
        self.meter_den.setCurrentIndex(1)
        self.meter_den.setToolTip("Beat unit")
        self.addWidget(QLabel("  "))
        self.addWidget(self.meter_num)
        self.addWidget(QLabel("/"))
        self.addWidget(self.meter_den)
        self.addWidget(QLabel("  Bar 1 at "))
        self.bar_start = QDoubleSpinBox()
        self.bar_start.setRange(0.0, 86400.0)
        self.bar_start.setDecimals(3)
        self.bar_start.setSingleStep(0.01)
        self.bar_start.setSuffix(" s")
        self.bar_start.setToolTip(
            "Where bar 1 begins, for a clip whose first downbeat is not at its start: the bar "
            "lines, the snap and the beat grid the model follows count from here "
            "(Ctrl+Shift+B: bar 1 at the playhead)")
        self.bar_start.setKeyboardTracking(False)
        _fit(self.bar_start, "0000.000 s")
        self.bar_start.valueChanged.connect(self.sig_bar_start.emit)
        self.addWidget(self.bar_start)
        self.addWidget(QLabel("  Key "))
        self.key = QComboBox()
        self.key.addItems(KEYS)
        self.key.setToolTip("Session key (used in exported file names)")
        self.addWidget(self.key)
        emit_meter = lambda *_: self.sig_meter.emit(self.meter_num.value(),  # noqa: E731
                                                    self.meter_den.currentData())
        self.meter_num.valueChanged.connect(emit_meter)
        self.meter_den.currentIndexChanged.connect(emit_meter)
        self.key.currentTextChanged.connect(lambda k: self.sig_key.emit(k or None))

    # ---- showing
    def show_session(self, s: Session) -> None:
        """Show the session's tempo, meter and key without reporting them as edits."""
        widgets = (self.tempo, self.meter_num, self.meter_den, self.bar_start, self.key)
        for w in widgets:
            w.blockSignals(True)
        self.tempo.setValue(s.tempo or 0)
        self.bar_start.setValue(s.bar_start)
        self.bar_start.setEnabled(bool(s.tempo))  # bars exist only with a tempo
        self.meter_num.setValue(s.meter[0])
        self.meter_den.setCurrentIndex(max(0, self.meter_den.findData(s.meter[1])))
        self.key.setCurrentText(s.key or "")
        for w in widgets:
            w.blockSignals(False)

    def show_position(self, seconds: float, bars_beats: str | None) -> None:
        self.clock.setText(f"{fmt_time(seconds)}" + (f"   {bars_beats}" if bars_beats else ""))

    def show_playing(self, playing: bool) -> None:
        self.b_play.defaultAction().setText("Pause" if playing else "Play")
        self.b_play.setText("❚❚" if playing else "▶")

    def set_devices(self, devices: list[tuple[int, str]], saved: str | None) -> bool:
        """List the output devices and select the saved one; False when it is not there
        (or there is no output at all)."""
        box = self.out_device
        box.clear()
        if not devices:
            box.addItem("no output", None)
            box.setEnabled(False)
            return False
        box.addItem("system default", None)
        for i, name in devices:
            box.addItem(name, i)
        i = box.findText(str(saved)) if saved is not None else -1
        if i >= 0:
            box.setCurrentIndex(i)
        return i >= 0


class TransportFollower:
    """Keeps the views in step with the transport: the clock and the lanes' playhead follow
    the position, Play shows Pause while playing, the status bar's `silent` label says why
    nothing is heard; a device chosen in the bar goes to the transport and is remembered in
    `settings` (restored on the next start)."""

    def __init__(self, bar: TransportBar, transport, lanes, silent: QLabel, settings,
                 session: Callable[[], Session]):
        self.bar, self.transport, self.lanes, self.silent = bar, transport, lanes, silent
        self.settings = settings
        self.session = session
        transport.sig_position.connect(self.show_position)
        transport.sig_state.connect(self.show_state)
        transport.sig_silent.connect(lambda _r: self.show_silent())
        bar.sig_device.connect(self.device_chosen)
        if bar.set_devices(transport.output_devices(), settings.value("output_device")):
            transport.set_device(bar.out_device.currentData())
        self.show_silent()

    def show_position(self, seconds: float) -> None:
        self.lanes.set_playhead(seconds)
        self.bar.show_position(seconds, self.session().bars_beats(seconds))

    def show_state(self, state: str) -> None:
        self.bar.show_playing(state == "playing")
        self.show_silent()

    def show_silent(self) -> None:
        r = self.transport.silent_reason
        self.silent.setText(f"silent — {r}" if r else "")
        self.silent.setToolTip(r or "")

    def device_chosen(self, device, name: str) -> None:
        self.transport.set_device(device)
        self.settings.setValue("output_device", name)
        self.show_silent()
