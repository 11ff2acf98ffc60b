"""Lanes: one row per track (header + waveform) under a shared ruler (seconds and bars|beats).

Waveforms are drawn from the track's min/max peak pyramid (`engine.document.session.PeakPyramid`):
on every change of the visible range each lane takes the coarsest level whose blocks are at
most half a pixel wide and draws ~2 points per pixel, whatever the session length. All lanes
are X-linked to the ruler, so zoom (wheel), scroll (shift+wheel or the scroll bar) and the
playhead are shared.

Mouse (the conventions of Bitwig and Logic): click a lane's header, name or waveform =
select it (the playhead stays: click the ruler to move it); double-click the name to rename;
drag on a lane = draw an inpaint region; drag a region to move it, its edges to resize;
right-click a region or lane for its menu. Drag on the ruler = set the loop region. Wheel =
scroll the lanes up and down, Shift+wheel (or a sideways wheel) = scroll in time,
Ctrl/Cmd+wheel = zoom around the pointer; zoom and scroll stop at the session's ends.
Keyboard (when the lanes have focus): Up/Down select the lane above/below, Left/Right move
the playhead by a bar (a second without a tempo).

The view is thin: every edit goes out as a `sig_*` signal; the window turns it into an undo
command; the session's change events come back in through `on_session_event`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QMimeData, QPoint, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDrag, QFontMetrics, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QColorDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QScrollArea,
    QScrollBar,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import theme
from engine.document.session import Session, SessionEvent, Track

HEADER_W = 250
LANE_H = 86
RULER_H = 46

ROLE_LABEL = {"context": "context", "reference": "reference", "generated": "generated"}


def fmt_time(s: float) -> str:
    s = max(0.0, s)
    m = int(s // 60)
    return f"{m}:{s - 60 * m:04.1f}"


# -------------------------------------------------------------------------------- axes / ruler



def drag_span(view_box, ev) -> tuple[float, float]:
    """The (start, end) seconds a mouse drag covers on a view box, clamped at 0."""
    x0 = max(0.0, view_box.mapSceneToView(ev.buttonDownScenePos()).x())
    x1 = max(0.0, view_box.mapSceneToView(ev.scenePos()).x())
    return min(x0, x1), max(x0, x1)

class SecondsAxis(pg.AxisItem):
    """Time axis labelled m:ss.s."""

    def tickStrings(self, values, scale, spacing):
        return [fmt_time(v) if v >= 0 else "" for v in values]


class BarsAxis(pg.AxisItem):
    """Bars|beats axis from the session tempo and meter (blank without a tempo)."""

    def __init__(self, get_session, *a, **kw):
        super().__init__(*a, **kw)
        self._get_session = get_session

    def tickValues(self, minVal, maxVal, size):
        s = self._get_session()
        spb = s.seconds_per_bar() if s else None
        if not spb:
            return []
        beat = spb / s.meter[0]
        px_per_s = size / max(1e-9, maxVal - minVal)
        bars_step = 1
        while bars_step * spb * px_per_s < 45:
            bars_step *= 2
        # bar lines count from bar 1 (`Session.bar_start`); the bars before it get lines too
        lo, hi = s.bars_at(max(0.0, minVal)), s.bars_at(maxVal)
        first = math.floor(lo / bars_step) * bars_step
        majors = [s.bar_time(b) for b in range(first, int(math.ceil(hi)) + 2, bars_step)]
        minors = []
        if beat * px_per_s > 12:
            n0 = math.floor(lo * s.meter[0])
            minors = [s.bar_time(k / s.meter[0])
                      for k in range(n0, int(math.ceil(hi * s.meter[0])) + 2)]
        return [(bars_step * spb, [v for v in majors if v >= -1e-9]),
                (beat, [v for v in minors if v >= -1e-9])]

    def tickStrings(self, values, scale, spacing):
        s = self._get_session()
        out = []
        for v in values:
            if not s or not s.tempo or v < -1e-9:
                out.append("")
                continue
            bar = s.bars_at(v)
            out.append(str(int(round(bar)) + 1) if abs(bar - round(bar)) < 1e-6 else "")
        return out


class RulerViewBox(pg.ViewBox):
    """Click seeks; drag sets the loop region."""

    def __init__(self, lanes: LaneView):
        super().__init__(enableMenu=False)
        self._lanes = lanes

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.LeftButton:
            ev.accept()
            self._lanes.sig_seek.emit(max(0.0, self.mapSceneToView(ev.scenePos()).x()))
        elif ev.button() == Qt.RightButton:
            ev.accept()
            self._lanes.sig_loop_changed.emit(None)

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() != Qt.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        a, b = drag_span(self, ev)
        self._lanes.show_loop((a, b))
        if ev.isFinish() and b - a > 1e-3:
            self._lanes.sig_loop_changed.emit((a, b))

    def wheelEvent(self, ev, axis=None):
        self._lanes.wheel(self, ev)


# -------------------------------------------------------------------------------- lane plot


class InpaintRegionItem(pg.LinearRegionItem):
    def __init__(self, lane: LanePlot, region_id: str, start: float, end: float):
        super().__init__(values=(start, end), brush=pg.mkBrush(*theme.REGION),
                         hoverBrush=pg.mkBrush(240, 90, 90, 110),
                         pen=pg.mkPen(240, 110, 110, 220, width=1.5), movable=True)
        self.lane = lane
        self.region_id = region_id
        self.setZValue(10)
        self.sigRegionChangeFinished.connect(lambda _r: lane.region_finished(self))
        self.setToolTip("Inpaint region: drag to move, drag an edge to resize, "
                        "right-click or Delete to remove")

    def set_selected(self, on: bool) -> None:
        self.setBrush(pg.mkBrush(240, 90, 90, 130 if on else theme.REGION[3]))
        self.update()

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.LeftButton:
            ev.accept()
            self.lane.owner.select_region(self.lane.track_id, self.region_id)
        elif ev.button() == Qt.RightButton:
            ev.accept()
            self.lane.owner.select_region(self.lane.track_id, self.region_id)
            menu = QMenu()
            menu.addAction("Inpaint this region", lambda: self.lane.owner.sig_action.emit("inpaint"))
            menu.addAction("Delete region", lambda: self.lane.owner.sig_region_deleted.emit(
                self.lane.track_id, self.region_id))
            menu.exec(ev.screenPos().toPoint())


class LaneViewBox(pg.ViewBox):
    """Click selects the lane; left-drag draws an inpaint region; wheel scrolls (Ctrl zooms)."""

    def __init__(self, plot: LanePlot):
        super().__init__(enableMenu=False)
        self.plot = plot
        self._ghost: pg.LinearRegionItem | None = None

    def mouseClickEvent(self, ev):
        lanes = self.plot.owner
        if ev.button() == Qt.LeftButton:
            ev.accept()
            lanes.select(self.plot.track_id)
            lanes.select_region(None, None)
            lanes.setFocus(Qt.MouseFocusReason)
        elif ev.button() == Qt.RightButton:
            ev.accept()
            lanes.select(self.plot.track_id)
            lanes.lane_menu(self.plot.track_id, ev.screenPos().toPoint())

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() != Qt.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        a, b = drag_span(self, ev)
        if self._ghost is None:
            self._ghost = pg.LinearRegionItem((a, b), movable=False,
                                              brush=pg.mkBrush(240, 90, 90, 50))
            self.addItem(self._ghost)
        self._ghost.setRegion((a, b))
        if ev.isFinish():
            self.removeItem(self._ghost)
            self._ghost = None
            if b - a > 0.02:
                self.plot.owner.select(self.plot.track_id)
                self.plot.owner.sig_region_drawn.emit(self.plot.track_id, a, b)

    def wheelEvent(self, ev, axis=None):
        self.plot.owner.wheel(self, ev)


class LanePlot(pg.PlotWidget):
    """The waveform of one track, its inpaint regions, the loop shade and the playhead."""

    def __init__(self, owner: LaneView, track: Track | None):
        self.owner = owner
        self.track_id = track.id if track else ""
        super().__init__(viewBox=LaneViewBox(self), background=theme.BG)
        self.setFixedHeight(LANE_H)
        self.hideAxis("left")
        self.hideAxis("bottom")
        self.setMouseEnabled(x=True, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        self.getPlotItem().setContentsMargins(0, 0, 0, 0)
        self.getPlotItem().layout.setContentsMargins(0, 2, 0, 2)
        vb = self.getViewBox()
        vb.setYRange(-1.05, 1.05, padding=0)
        vb.setLimits(xMin=-1.0, minXRange=0.005)
        self.curve = pg.PlotCurveItem(antialias=False)
        self.addItem(self.curve)
        self.loop_item = pg.LinearRegionItem((0, 0), movable=False, brush=pg.mkBrush(*theme.LOOP),
                                             pen=pg.mkPen(None))
        self.loop_item.setZValue(-5)
        self.loop_item.hide()
        self.addItem(self.loop_item)
        self.playhead = pg.InfiniteLine(0, pen=pg.mkPen(theme.PLAYHEAD, width=1.5))
        self.playhead.setZValue(20)
        self.addItem(self.playhead)
        self.regions: dict[str, InpaintRegionItem] = {}
        vb.sigXRangeChanged.connect(lambda *_: self.refresh())
        if track is not None:
            self.set_style(track)

    def set_selected(self, on: bool) -> None:
        self.setBackground(theme.SELECTED_BG if on else theme.BG)

    def set_style(self, track: Track) -> None:
        col = QColor(track.color or "#cccccc")
        dim = not self.owner.session.audible(track)
        col.setAlpha(110 if dim else 235)
        self.curve.setPen(pg.mkPen(col, width=1))

    def refresh(self) -> None:
        """Redraw the waveform for the visible range from the peak pyramid."""
        s = self.owner.session
        try:
            t = s.track(self.track_id)
        except KeyError:
            return
        vb = self.getViewBox()
        (x0, x1), _ = vb.viewRange()
        width = max(50.0, vb.width())
        sr = s.sample_rate
        start = max(0, int(x0 * sr) - t.offset)
        stop = min(t.frames, int(math.ceil(x1 * sr)) - t.offset)
        if stop <= start:
            self.curve.setData([], [])
            return
        fpp = (x1 - x0) * sr / width
        bf, i0, seg = t.peaks().segment(start, stop, fpp)
        n = seg.shape[1]
        if n == 0:
            self.curve.setData([], [])
            return
        xs = (t.offset + (i0 + np.arange(n)) * bf) / sr
        x = np.repeat(xs, 2)
        y = np.ascontiguousarray(seg.T).reshape(-1)
        y = np.clip(y * t.gain, -1.0, 1.0)
        self.curve.setData(x, y)

    def set_regions(self, track: Track, selected: str | None) -> None:
        for item in self.regions.values():
            self.removeItem(item)
        self.regions = {}
        for r in track.regions:
            item = InpaintRegionItem(self, r.id, r.start, r.end)
            item.set_selected(r.id == selected)
            self.regions[r.id] = item
            self.addItem(item)

    def region_finished(self, item: InpaintRegionItem) -> None:
        a, b = item.getRegion()
        self.owner.sig_region_moved.emit(self.track_id, item.region_id, float(a), float(b))


# -------------------------------------------------------------------------------- header


class ResetLabel(QLabel):
    """A label that runs `on_reset` when double-clicked."""

    def __init__(self, on_reset):
        super().__init__()
        self._on_reset = on_reset

    def mouseDoubleClickEvent(self, ev):
        self._on_reset()
        ev.accept()


class NameLabel(QLabel):
    """A lane's name, cut with an ellipsis when it does not fit (the whole name is in the
    tooltip); a click falls through to the header (selects), a double-click renames."""

    sig_edit = Signal()

    def __init__(self):
        super().__init__()
        self.full_text = ""
        self.setMinimumWidth(20)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)

    def set_full_text(self, text: str) -> None:
        self.full_text = text
        self._elide()

    def _elide(self) -> None:
        fm = QFontMetrics(self.font())
        self.setText(fm.elidedText(self.full_text, Qt.ElideRight, max(20, self.width())))

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._elide()

    def mousePressEvent(self, ev):
        ev.ignore()  # the header selects the lane

    def mouseDoubleClickEvent(self, ev):
        ev.accept()
        self.sig_edit.emit()


class NameEdit(QLineEdit):
    """The in-place rename field: Enter and Esc belong to it while it is open (elsewhere
    they are the transport's Stop and Cancel)."""

    def __init__(self, on_cancel):
        super().__init__()
        self._on_cancel = on_cancel

    def event(self, ev):
        if ev.type() == ev.Type.ShortcutOverride and ev.key() in (
                Qt.Key_Return, Qt.Key_Enter, Qt.Key_Escape):
            ev.accept()
            return True
        return super().event(ev)

    def keyPressEvent(self, ev):
        if ev.key() == Qt.Key_Escape:
            self._on_cancel()
            return
        super().keyPressEvent(ev)


class LaneHeader(QFrame):
    """Name, role, colour, mute/solo/in-context, gain, take A/B switch; drag out to a DAW."""

    def __init__(self, owner: LaneView, track: Track | None):
        super().__init__()
        self.owner = owner
        self.track_id = track.id if track else ""
        self.setObjectName("laneHeader")
        self.setFixedSize(HEADER_W, LANE_H)
        self._press: QPoint | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.setSpacing(3)
        row1 = QHBoxLayout()
        row1.setSpacing(4)
        self.swatch = QToolButton()
        self.swatch.setFixedSize(14, 30)
        self.swatch.setToolTip("Lane colour (click to change)")
        self.swatch.clicked.connect(self._pick_color)
        self.name = NameLabel()
        self.name.setObjectName("laneName")
        self.name.sig_edit.connect(self.start_rename)
        self.name_edit = NameEdit(self._cancel_rename)
        self.name_edit.setObjectName("laneNameEdit")
        self.name_edit.hide()
        self.name_edit.editingFinished.connect(self._rename)
        self.role = QLabel()
        self.role.setObjectName("hint")
        self.info = QToolButton()
        self.info.setText("i")
        self.info.setToolTip("Provenance")
        self.info.clicked.connect(lambda: owner.sig_show_provenance.emit(self.track_id))
        col = QVBoxLayout()
        col.setSpacing(0)
        col.addWidget(self.name)
        col.addWidget(self.name_edit)
        col.addWidget(self.role)
        row1.addWidget(self.swatch)
        row1.addLayout(col, 1)
        row1.addWidget(self.info)
        lay.addLayout(row1)

        row2 = QHBoxLayout()
        row2.setSpacing(3)
        self.mute = self._toggle("M", "mute", "Mute this lane (live)")
        self.solo = self._toggle("S", "solo", "Solo this lane (live)")
        self.ctx = self._toggle("C", "ctx", "In context: include this lane in the context the "
                                            "model listens to")
        self.take = self._toggle("A", "take", "Take A/B: make this take the one you hear")
        self.mute.toggled.connect(lambda v: self._attr("mute", v))
        self.solo.toggled.connect(lambda v: self._attr("solo", v))
        self.ctx.toggled.connect(lambda v: self._attr("in_context", v))
        self.take.clicked.connect(lambda: owner.sig_take_activated.emit(self.track_id))
        self.gain = QSlider(Qt.Horizontal)
        self.gain.setRange(-600, 120)
        self.gain.setToolTip("Gain (dB); double-click the value to reset")
        self.gain.setFocusPolicy(Qt.NoFocus)  # Space always reaches play/pause
        self.gain.valueChanged.connect(self._gain_moved)
        self.gain.sliderReleased.connect(owner.sig_merge_closed.emit)
        self.gain_label = ResetLabel(lambda: self._attr("gain_db", 0.0))
        self.gain_label.setFixedWidth(52)
        self.gain_label.setToolTip("Gain in dB; double-click to reset to 0 dB")
        for w in (self.mute, self.solo, self.ctx, self.take):
            row2.addWidget(w)
        row2.addWidget(self.gain, 1)
        row2.addWidget(self.gain_label)
        lay.addLayout(row2)
        self._updating = False
        if track is not None:
            self.update_from(track)

    def _toggle(self, text, name, tip) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setObjectName(name)
        b.setCheckable(True)
        b.setFixedSize(24, 22)
        b.setFocusPolicy(Qt.NoFocus)
        b.setStyleSheet("padding: 0px;")
        b.setToolTip(tip)
        return b

    def _attr(self, attr, value, merge=False):
        if not self._updating:
            self.owner.sig_track_attr.emit(self.track_id, attr, value, merge)

    def _gain_moved(self, v):
        self.gain_label.setText(f"{v / 10:+.1f} dB")
        self._attr("gain_db", v / 10, True)

    def start_rename(self) -> None:
        """Double-click on the name (as in Ableton, Bitwig, Logic): edit it in place."""
        self.owner.select(self.track_id)
        self.name_edit.setText(self.name.full_text)
        self.name.hide()
        self.name_edit.show()
        self.name_edit.selectAll()
        self.name_edit.setFocus(Qt.MouseFocusReason)

    def _cancel_rename(self) -> None:
        self.name_edit.hide()
        self.name.show()
        self.owner.setFocus(Qt.OtherFocusReason)

    def _rename(self):
        if not self.name_edit.isVisible():
            return
        text = self.name_edit.text().strip()
        self.name_edit.hide()
        self.name.show()
        self.owner.setFocus(Qt.OtherFocusReason)  # keys go back to the transport
        try:
            t = self.owner.session.track(self.track_id)
        except KeyError:
            return
        if text and text != t.name:
            self._attr("name", text)

    def _pick_color(self):
        t = self.owner.session.track(self.track_id)
        c = QColorDialog.getColor(QColor(t.color), self, "Lane colour")
        if c.isValid():
            self._attr("color", c.name())

    def update_from(self, track: Track) -> None:
        s = self.owner.session
        self._updating = True
        try:
            if getattr(self, "_color", None) != track.color:
                self._color = track.color
                self.swatch.setStyleSheet(
                    f"background: {track.color}; border: none; border-radius: 2px;")
            self.name.set_full_text(track.name)
            tip = ("Click to select, double-click to rename. Drag the header out to a DAW or "
                   "file manager to drop the stem as a WAV file.")
            self.name.setToolTip(f"{track.name}\n{tip}")
            role = ROLE_LABEL.get(track.role, track.role)
            takes = s.takes(track.take_group) if track.take_group else []
            if len(takes) > 1:
                idx = next((i for i, t in enumerate(takes) if t.id == track.id), 0)
                letter = chr(ord("A") + idx) if idx < 26 else str(idx + 1)
                self.take.setText(letter)
                role += f" · take {letter} of {len(takes)}"
            self.take.setVisible(len(takes) > 1)
            self.take.setChecked(s.take_active(track))
            self.role.setText(role)
            self.mute.setChecked(track.mute)
            self.solo.setChecked(track.solo)
            self.ctx.setChecked(track.in_context)
            self.ctx.setEnabled(track.role != "reference")
            if not self.gain.isSliderDown():
                self.gain.setValue(int(round(track.gain_db * 10)))
            self.gain_label.setText(f"{track.gain_db:+.1f} dB")
            self.info.setVisible(track.provenance is not None)
            if track.provenance:
                p = track.provenance
                self.info.setToolTip("Provenance:\n" + "\n".join(
                    f"{k}: {v}" for k, v in p.items() if not isinstance(v, (dict, list)))[:1500])
        finally:
            self._updating = False

    def set_selected(self, on: bool) -> None:
        self.setProperty("selected", "true" if on else "false")
        self.style().unpolish(self)
        self.style().polish(self)

    def set_placeholder(self, text: str) -> None:
        """A reserved row (see `LaneView.prepare_rows`): a name and nothing to click."""
        self.track_id = ""
        self.name.set_full_text(text)
        self.role.setText("")
        for w in (self.mute, self.solo, self.ctx, self.take, self.info, self.gain,
                  self.gain_label, self.swatch):
            w.setVisible(False)

    def show_controls(self) -> None:
        for w in (self.mute, self.solo, self.ctx, self.gain, self.gain_label, self.swatch):
            w.setVisible(True)

    # selection and drag-out
    def mousePressEvent(self, ev):
        if not self.track_id:  # a reserved row: nothing to select yet
            return super().mousePressEvent(ev)
        if ev.button() == Qt.LeftButton:
            self._press = ev.position().toPoint()
            self.owner.select(self.track_id)
            self.owner.setFocus(Qt.MouseFocusReason)
        elif ev.button() == Qt.RightButton:
            self.owner.select(self.track_id)
            self.owner.lane_menu(self.track_id, ev.globalPosition().toPoint())
        super().mousePressEvent(ev)

    def mouseMoveEvent(self, ev):
        if (self._press is not None and ev.buttons() & Qt.LeftButton
                and (ev.position().toPoint() - self._press).manhattanLength()
                >= QApplication.startDragDistance()):
            self._press = None
            self.start_drag()
        super().mouseMoveEvent(ev)

    def mouseReleaseEvent(self, ev):
        self._press = None
        super().mouseReleaseEvent(ev)

    def drag_mime(self) -> QMimeData | None:
        """Write the stem to the export folder first, then describe it for a drag."""
        path = self.owner.drag_file_provider(self.track_id) if self.owner.drag_file_provider else None
        if path is None:
            return None
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        mime.setData("application/x-riffwright-track", json.dumps({"id": self.track_id}).encode())
        return mime

    def start_drag(self) -> None:
        mime = self.drag_mime()
        if mime is None:
            return
        drag = QDrag(self)
        drag.setMimeData(mime)
        pix = QPixmap(self.size())
        self.render(pix)
        drag.setPixmap(pix.scaledToWidth(160))
        drag.exec(Qt.CopyAction)


# -------------------------------------------------------------------------------- lane view


SPARE_DELAY_MS, SPARE_GAP_MS = 200, 40


class LaneRow(QWidget):
    """A lane's header and waveform. Built without a track it is a reserved row: `LaneView`
    puts one in the layout per expected take while a generation runs, so a take lands
    without building widgets or re-laying out the view."""

    def __init__(self, owner: LaneView, track: Track | None):
        super().__init__()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 1)
        lay.setSpacing(0)
        self.header = LaneHeader(owner, track)
        self.plot = LanePlot(owner, track)
        lay.addWidget(self.header)
        lay.addWidget(self.plot, 1)

    def bind(self, track: Track) -> None:
        self.header.track_id = self.plot.track_id = track.id
        self.header.show_controls()
        self.header.update_from(track)
        self.plot.set_style(track)


class LaneView(QWidget):
    """The ruler, the lane rows and the horizontal scroll bar over one session."""

    sig_seek = Signal(float)  # seconds
    sig_loop_changed = Signal(object)  # (start, end) seconds or None
    sig_region_drawn = Signal(str, float, float)  # track id, start, end
    sig_region_moved = Signal(str, str, float, float)  # track id, region id, start, end
    sig_region_deleted = Signal(str, str)  # track id, region id
    sig_track_attr = Signal(str, str, object, bool)  # track id, attribute, value, merge
    sig_merge_closed = Signal()  # a slider drag ended
    sig_selected = Signal(object)  # track id or None
    sig_take_activated = Signal(str)  # track id
    sig_show_provenance = Signal(str)
    sig_delete_track = Signal(str)
    sig_action = Signal(str)  # "inpaint", "vary", "regenerate", "use_context", "continue"

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.rows: dict[str, LaneRow] = {}
        self.selected: str | None = None
        self.selected_region: tuple[str, str] | None = None
        self.drag_file_provider = None  # callable(track_id) -> Path, set by the window
        self._syncing = False
        self._playhead = 0.0
        self.setFocusPolicy(Qt.StrongFocus)  # transport and edit keys land here
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)

        top = QHBoxLayout()
        top.setSpacing(0)
        self.corner = QLabel()
        self.corner.setFixedSize(HEADER_W, RULER_H)
        self.corner.setObjectName("hint")
        self.corner.setAlignment(Qt.AlignCenter)
        top.addWidget(self.corner)
        self.bars_axis = BarsAxis(lambda: self.session, orientation="bottom")
        self.secs_axis = SecondsAxis(orientation="top")
        self.ruler = pg.PlotWidget(viewBox=RulerViewBox(self), background=theme.PANEL,
                                   axisItems={"bottom": self.bars_axis, "top": self.secs_axis})
        self.ruler.setFixedHeight(RULER_H)
        self.ruler.hideAxis("left")
        self.ruler.showAxis("top")
        self.ruler.setMouseEnabled(x=True, y=False)
        self.ruler.setMenuEnabled(False)
        self.ruler.hideButtons()
        for ax in (self.bars_axis, self.secs_axis):
            ax.setPen(pg.mkPen(theme.LINE))
            ax.setTextPen(pg.mkPen(theme.MUTED))
            ax.setStyle(tickLength=-6, tickTextOffset=2)
        self.bars_axis.setTextPen(pg.mkPen(theme.TEXT))
        self.ruler.getPlotItem().layout.setContentsMargins(0, 0, 0, 0)
        rvb = self.ruler.getViewBox()
        rvb.setYRange(0, 1, padding=0)
        rvb.setLimits(xMin=-1.0, minXRange=0.005)
        self.ruler_loop = pg.LinearRegionItem((0, 0), brush=pg.mkBrush(80, 170, 255, 90),
                                              pen=pg.mkPen(80, 170, 255, 220, width=2))
        self.ruler_loop.setToolTip("Loop region: drag the edges; right-click the ruler to clear")
        self.ruler_loop.hide()
        self.ruler_loop.sigRegionChangeFinished.connect(self._ruler_loop_finished)
        self.ruler.addItem(self.ruler_loop)
        self.ruler_head = pg.InfiniteLine(0, pen=pg.mkPen(theme.PLAYHEAD, width=2))
        self.ruler.addItem(self.ruler_head)
        self.ruler.setToolTip("Click to move the playhead; drag to set the loop region")
        top.addWidget(self.ruler, 1)
        outer.addLayout(top)

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.container = QWidget()
        self.vbox = QVBoxLayout(self.container)
        self.vbox.setContentsMargins(0, 0, 0, 0)
        self.vbox.setSpacing(0)
        self.empty = QLabel("Drop WAV, FLAC, AIFF, OGG or MP3 files here, or use File › Import "
                            "(Ctrl+I).\nThey become context lanes for the model to play along to.")
        self.empty.setObjectName("hint")
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setMinimumHeight(160)
        self.vbox.addWidget(self.empty)
        self.vbox.addStretch(1)
        self.scroll.setWidget(self.container)
        outer.addWidget(self.scroll, 1)

        bottom = QHBoxLayout()
        bottom.setContentsMargins(HEADER_W, 0, 0, 0)
        self.hbar = QScrollBar(Qt.Horizontal)
        self.hbar.valueChanged.connect(self._hbar_moved)
        bottom.addWidget(self.hbar)
        outer.addLayout(bottom)

        rvb.sigXRangeChanged.connect(lambda *_: self._sync_hbar())
        self._redraw_timer = QTimer(self)
        self._spares: list[LaneRow] = []
        self._spares_wanted = 0
        self.set_session(session)

    # ---- session binding
    def set_session(self, session: Session) -> None:
        if self.session is not None:
            self.session.unsubscribe(self.on_session_event)
        self.session = session
        session.subscribe(self.on_session_event)
        for tid in list(self.rows):
            self._remove_row(tid)
        self.release_rows()
        self.selected = None
        for t in session.tracks:
            self._add_row(t)
        self.show_loop(session.loop)
        self._update_corner()
        self.fit()

    def on_session_event(self, event: SessionEvent, p: dict) -> None:
        handler = {
            SessionEvent.TRACK_ADDED: self._on_track_added,
            SessionEvent.TRACK_REMOVED: self._on_track_removed,
            SessionEvent.TRACK_CHANGED: self._on_track_changed,
            SessionEvent.REGIONS_CHANGED: self._on_regions_changed,
            SessionEvent.SESSION_CHANGED: self._on_session_changed,
        }.get(event)
        if handler is not None:
            handler(p)

    def _on_track_added(self, p: dict) -> None:
        track = p["track"]
        self._add_row(track, p.get("index"))
        self._update_limits()
        if len(self.rows) == 1 or track.end > self.visible_range()[1] * self.session.sample_rate:
            self.fit()
        self._restyle_all()
        self.follow(track.id)

    def _on_track_removed(self, p: dict) -> None:
        self._remove_row(p["track"].id)
        if self.selected == p["track"].id:
            self.select(None)
        self._update_limits()
        self._restyle_all()

    def _on_track_changed(self, p: dict) -> None:
        row = self.rows.get(p["track"].id)
        if row:
            row.header.update_from(p["track"])
            if p.get("attr") in ("gain_db", "color"):
                row.plot.refresh()
        self._restyle_all()

    def _on_regions_changed(self, p: dict) -> None:
        row = self.rows.get(p["track"].id)
        if row:
            sel = self.selected_region[1] if self.selected_region else None
            row.plot.set_regions(p["track"], sel)

    def _on_session_changed(self, p: dict) -> None:
        attr = p.get("attr")
        if attr == "loop":
            self.show_loop(self.session.loop)
        elif attr in ("tempo", "meter", "bar_start"):
            self.bars_axis.picture = None
            self.bars_axis.update()
            self._update_corner()
        elif attr == "active_takes":
            self._restyle_all()

    def _restyle_all(self) -> None:
        for tid, row in self.rows.items():
            try:
                t = self.session.track(tid)
            except KeyError:
                continue
            row.plot.set_style(t)
            row.header.update_from(t)

    def _update_corner(self) -> None:
        s = self.session
        if s.tempo:
            self.corner.setText(f"{s.tempo:.1f} BPM   {s.meter[0]}/{s.meter[1]}"
                                + (f"   {s.key}" if s.key else ""))
        else:
            self.corner.setText("no tempo · seconds")

    def prepare_rows(self, n: int) -> None:
        """Reserve a row for each of `n` takes of a running generation, below the last lane:
        built one at a time with gaps between them (none blocks the event loop for long) and
        shown at once as "generating…", so that a take lands by binding its reserved row,
        with no widget to build and no re-layout of the view. The first waits until the start
        of the generation has settled."""
        self._spares_wanted = max(self._spares_wanted, min(int(n), 8))
        QTimer.singleShot(SPARE_DELAY_MS, self._build_spare)

    def _build_spare(self) -> None:
        if len(self._spares) >= self._spares_wanted:
            return
        row = LaneRow(self, None)
        row.header.set_placeholder(f"generating take {len(self._spares) + 1}…")
        row.plot.setXLink(self.ruler)
        row.plot.playhead.setPos(self._playhead)
        self._spares.append(row)
        self.vbox.insertWidget(len(self.rows) + len(self._spares) - 1, row)
        row.show()
        self.empty.setVisible(False)
        if len(self._spares) == 1:
            QTimer.singleShot(0, lambda r=row: self.scroll.ensureWidgetVisible(r, 0, 0))
        QTimer.singleShot(SPARE_GAP_MS, self._build_spare)

    def release_rows(self) -> None:
        """The generation ended without (more) takes: drop the rows reserved for them."""
        self._spares_wanted = 0
        while self._spares:
            row = self._spares.pop()
            row.plot.setXLink(None)
            self.vbox.removeWidget(row)
            row.setParent(None)
            row.deleteLater()
        self.empty.setVisible(not self.rows)

    def _add_row(self, track: Track, index: int | None = None) -> None:
        order = [t.id for t in self.session.tracks]
        pos = order.index(track.id) if track.id in order else len(self.rows)
        if self._spares:
            row = self._spares.pop(0)
            self._spares_wanted = max(0, self._spares_wanted - 1)
            row.bind(track)
        else:
            row = LaneRow(self, track)
            row.plot.setXLink(self.ruler)
        row.plot.set_regions(track, None)
        self.rows[track.id] = row
        if self.vbox.indexOf(row) != pos:  # a reserved row already sits where it lands
            self.vbox.insertWidget(pos, row)
        row.show()
        self.empty.setVisible(False)
        (x0, x1), _ = self.ruler.getViewBox().viewRange()
        row.plot.getViewBox().setXRange(x0, x1, padding=0)
        row.plot.playhead.setPos(self._playhead)
        on = track.id == self.selected
        row.header.set_selected(on)
        row.plot.set_selected(on)
        self.show_loop(self.session.loop)
        row.plot.refresh()

    def follow(self, tid: str) -> None:
        """Scroll the new lane into view (as a DAW does with a new track)."""
        row = self.rows.get(tid)
        if row is not None:
            QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(row, 0, 0)
                              if self.rows.get(tid) is row else None)

    def _remove_row(self, tid: str) -> None:
        row = self.rows.pop(tid, None)
        if row is not None:
            row.plot.setXLink(None)
            self.vbox.removeWidget(row)
            row.setParent(None)
            row.deleteLater()
        self.empty.setVisible(not self.rows)

    # ---- selection
    def select(self, tid: str | None) -> None:
        if tid == self.selected:
            return
        self.selected = tid
        for k, row in self.rows.items():
            row.header.set_selected(k == tid)
            row.plot.set_selected(k == tid)
        if tid in self.rows:
            self.scroll.ensureWidgetVisible(self.rows[tid], 0, 0)
        self.sig_selected.emit(tid)

    def select_step(self, step: int) -> None:
        """Select the lane `step` rows below (negative: above) the selected one."""
        order = [t.id for t in self.session.tracks if t.id in self.rows]
        if not order:
            return
        if self.selected not in order:
            self.select(order[0] if step > 0 else order[-1])
            return
        i = max(0, min(len(order) - 1, order.index(self.selected) + step))
        self.select(order[i])

    def keyPressEvent(self, ev):
        key = ev.key()
        if key in (Qt.Key_Up, Qt.Key_Down) and not ev.modifiers():
            self.select_step(-1 if key == Qt.Key_Up else 1)
            ev.accept()
        elif key in (Qt.Key_Left, Qt.Key_Right) and not ev.modifiers():
            step = 1 if key == Qt.Key_Right else -1
            s = self.session
            if s.tempo:  # to the next / the previous bar line
                bars = s.bars_at(self._playhead)
                target = s.bar_time(math.floor(bars + 1e-9) + 1 if step > 0
                                    else math.ceil(bars - 1e-9) - 1)
            else:
                target = round(self._playhead) + step
            self.sig_seek.emit(min(max(0.0, target), s.seconds))
            ev.accept()
        else:
            super().keyPressEvent(ev)

    def select_region(self, tid: str | None, rid: str | None) -> None:
        self.selected_region = (tid, rid) if tid and rid else None
        for k, row in self.rows.items():
            for r_id, item in row.plot.regions.items():
                item.set_selected(k == tid and r_id == rid)
        if tid:
            self.select(tid)

    def lane_menu(self, tid: str, pos) -> None:
        t = self.session.track(tid)
        menu = QMenu(self)
        if t.regions:
            menu.addAction("Inpaint region", lambda: self.sig_action.emit("inpaint"))
        menu.addAction("Vary", lambda: self.sig_action.emit("vary"))
        menu.addAction("Continue", lambda: self.sig_action.emit("continue"))
        if t.provenance:
            menu.addAction("Regenerate (same recipe)", lambda: self.sig_action.emit("regenerate"))
            menu.addAction("Use as context", lambda: self.sig_action.emit("use_context"))
            menu.addAction("Show provenance", lambda: self.sig_show_provenance.emit(tid))
        menu.addAction("Use as audio reference", lambda: self.sig_action.emit("use_reference"))
        menu.addSeparator()
        menu.addAction("Delete lane", lambda: self.sig_delete_track.emit(tid))
        menu.exec(pos)

    # ---- time
    def visible_range(self) -> tuple[float, float]:
        (x0, x1), _ = self.ruler.getViewBox().viewRange()
        return x0, x1

    def content_span(self) -> tuple[float, float]:
        """The widest view: the session (at least 4 s) with a sliver before zero (bar 1)."""
        total = max(4.0, self.session.seconds * 1.02)
        return -0.012 * total, total

    def _update_limits(self) -> None:
        """Zoom and scroll stop at the session's ends (the limits follow its length)."""
        lo, hi = self.content_span()
        for vb in [self.ruler.getViewBox()] + [r.plot.getViewBox() for r in self.rows.values()]:
            vb.setLimits(xMin=lo, xMax=hi, minXRange=0.005, maxXRange=hi - lo)

    def set_visible_range(self, x0: float, x1: float) -> None:
        lo, hi = self.content_span()
        w = min(max(0.005, x1 - x0), hi - lo)
        x0 = min(max(lo, x0), hi - w)
        self.ruler.getViewBox().setXRange(x0, x0 + w, padding=0)

    def fit(self) -> None:
        self._update_limits()
        self.set_visible_range(*self.content_span())

    def zoom(self, factor: float, center: float | None = None) -> None:
        x0, x1 = self.visible_range()
        c = (x0 + x1) / 2 if center is None else center
        lo, hi = self.content_span()
        w = min(max(0.005, (x1 - x0) * factor), hi - lo)
        a = c - (c - x0) * (w / max(1e-9, x1 - x0))
        self.set_visible_range(a, a + w)

    def scroll_time(self, fraction: float) -> None:
        x0, x1 = self.visible_range()
        shift = (x1 - x0) * fraction
        self.set_visible_range(x0 + shift, x1 + shift)

    def wheel(self, vb: pg.ViewBox, ev) -> None:
        """Wheel scrolls the lanes, Shift+wheel (or a sideways wheel) scrolls in time,
        Ctrl/Cmd+wheel zooms around the pointer: Ableton's and Bitwig's wheel."""
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        sideways = hasattr(ev, "orientation") and ev.orientation() == Qt.Horizontal
        mods = ev.modifiers()
        ev.accept()
        if not delta:
            return
        if mods & (Qt.ControlModifier | Qt.MetaModifier):
            center = vb.mapSceneToView(ev.scenePos()).x()
            self.zoom(0.8 if delta > 0 else 1.25, center)
        elif mods & Qt.ShiftModifier or sideways:
            self.scroll_time(-0.1 * delta / 120)
        else:
            bar = self.scroll.verticalScrollBar()
            bar.setValue(bar.value() - int(delta / 120 * LANE_H / 2))

    def _sync_hbar(self) -> None:
        if self._syncing:
            return
        x0, x1 = self.visible_range()
        total = max(self.session.seconds, x1)
        self._syncing = True
        self.hbar.setRange(0, int(max(0.0, total - (x1 - x0)) * 1000))
        self.hbar.setPageStep(int((x1 - x0) * 1000))
        self.hbar.setValue(int(max(0.0, x0) * 1000))
        self._syncing = False

    def _hbar_moved(self, v: int) -> None:
        if self._syncing:
            return
        x0, x1 = self.visible_range()
        self._syncing = True
        self.set_visible_range(v / 1000, v / 1000 + (x1 - x0))
        self._syncing = False

    # ---- loop and playhead
    def show_loop(self, loop) -> None:
        if loop:
            self.ruler_loop.blockSignals(True)
            self.ruler_loop.setRegion(loop)
            self.ruler_loop.blockSignals(False)
            self.ruler_loop.show()
        else:
            self.ruler_loop.hide()
        for row in self.rows.values():
            if loop:
                row.plot.loop_item.setRegion(loop)
                row.plot.loop_item.show()
            else:
                row.plot.loop_item.hide()

    def _ruler_loop_finished(self, *_):
        a, b = self.ruler_loop.getRegion()
        self.sig_loop_changed.emit((max(0.0, float(a)), float(b)))

    def set_playhead(self, seconds: float) -> None:
        self._playhead = seconds
        self.ruler_head.setPos(seconds)
        for row in list(self.rows.values()) + self._spares:
            row.plot.playhead.setPos(seconds)

    def redraw_all(self) -> float:
        """Recompute every lane's waveform for the current view; returns seconds taken."""
        import time

        t0 = time.perf_counter()
        for row in self.rows.values():
            row.plot.refresh()
        return time.perf_counter() - t0

    def sizeHint(self):
        return super().sizeHint()
