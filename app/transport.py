"""Playback: a pre-mixed stereo buffer played through sounddevice, with a silent fallback.

The audio callback only copies from the current mix buffer into the output (no allocation of
sample memory, no locks, no logging, no Qt): the buffer reference and the play state are
plain attributes swapped atomically by the GUI thread. Live mute/solo/gain re-render the mix
in a worker thread and swap the reference when done. The GUI polls `position()` on a timer.

Without PortAudio (import fails) or without an output device, the transport runs on a
wall clock so the playhead still moves, and `silent_reason` says why nothing is heard.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from engine.document.session import Session, SessionEvent

BLOCK = 1024
# track attributes that change what is heard (a new mix when one changes)
_AUDIBLE_TRACK_ATTRS = ("mute", "solo", "gain_db", "offset", "in_context", "role")


class _State:
    """Everything the callback reads; attributes are replaced whole, never mutated in place."""

    __slots__ = ("buf", "pos", "playing", "loop")

    def __init__(self):
        self.buf = np.zeros((0, 2), np.float32)
        self.pos = 0
        self.playing = False
        self.loop: tuple[int, int] | None = None


class Transport(QObject):
    """Play, pause, stop, seek, loop; mixes in the background; reports the position."""

    sig_state = Signal(str)  # "playing", "paused", "stopped"
    sig_position = Signal(float)  # seconds, ~30 times a second while playing
    sig_silent = Signal(str)  # why playback is silent ("" when audio works)

    def __init__(self, session: Session, device=None, parent=None, use_audio: bool = True):
        super().__init__(parent)
        self.session = session
        session.subscribe(self._session_event)
        self.st = _State()
        self.sr = session.sample_rate
        self.device = device
        self.silent_reason = ""
        self._sd = None
        self._stream = None
        self._clock_t0 = 0.0
        self._clock_pos0 = 0
        self._mix_gen = 0
        self._use_audio = use_audio
        self._timer = QTimer(self)
        self._timer.setInterval(33)
        self._timer.timeout.connect(self._tick)
        self._mix_thread: threading.Thread | None = None
        self._pending_mix: tuple[int, np.ndarray] | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(20)
        self._poll.timeout.connect(self._check_mix)
        if use_audio:
            self._init_audio()
        else:
            self.silent_reason = "audio output disabled"

    # ---- device
    def _init_audio(self) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:
            self.silent_reason = f"PortAudio is not available ({e.__class__.__name__})"
            return
        self._sd = sd
        try:
            devs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
        except Exception as e:  # noqa: BLE001 - PortAudio errors vary by platform
            self.silent_reason = f"cannot list audio devices ({e})"
            return
        if not devs:
            self.silent_reason = "this machine has no audio output device"

    def output_devices(self) -> list[tuple[int, str]]:
        if self._sd is None:
            return []
        try:
            return [(i, d["name"]) for i, d in enumerate(self._sd.query_devices())
                    if d["max_output_channels"] > 0]
        except Exception:  # noqa: BLE001
            return []

    def set_device(self, device) -> None:
        was = self.st.playing
        self._close_stream()
        self.device = device
        self.silent_reason = ""
        if was:
            self._open_stream()

    def _open_stream(self) -> bool:
        if self._sd is None or (self.silent_reason and self._stream is None
                                and "no audio output device" in self.silent_reason):
            return False
        if self._stream is not None:
            return True
        try:
            self._stream = self._sd.OutputStream(
                samplerate=self.sr, channels=2, dtype="float32", blocksize=BLOCK,
                latency="high",  # the callback needs the GIL: leave room for GUI paints
                device=self.device, callback=self._callback)
            self._stream.start()
            self.silent_reason = ""
            return True
        except Exception as e:  # noqa: BLE001
            self._stream = None
            self.silent_reason = f"cannot open the audio output device ({e})"
            self.sig_silent.emit(self.silent_reason)
            return False

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:  # noqa: BLE001
                pass
            self._stream = None

    # ---- the real-time callback: copies only
    def _callback(self, outdata, frames, _time, _status):
        st = self.st
        buf = st.buf
        if not st.playing or buf.shape[0] == 0:
            outdata.fill(0)
            return
        pos = st.pos
        end = buf.shape[0]
        loop = st.loop
        if loop is not None:
            end = loop[1]
        n = min(frames, max(0, end - pos))
        if n > 0:
            outdata[:n] = buf[pos:pos + n]
        if n < frames:
            if loop is not None:
                m = min(frames - n, loop[1] - loop[0])
                outdata[n:n + m] = buf[loop[0]:loop[0] + m]
                outdata[n + m:].fill(0)
                st.pos = loop[0] + m
                return
            outdata[n:].fill(0)
            st.playing = False
        st.pos = pos + n

    # ---- mixing
    def remix(self, wait: bool = False) -> None:
        """Re-render the mix from the session in a background thread, then swap it in.

        Requests coalesce: at most one render runs; a request during a render re-runs it
        once when it finishes (so a burst of gain moves costs two renders, not twenty).
        """
        self._mix_gen += 1
        if self._mix_thread is not None and self._mix_thread.is_alive():
            if wait:
                self._mix_thread.join()
            else:
                self._poll.start()
                return
        gen = self._mix_gen
        session = self.session

        def work():
            mix = session.render(interleaved=True)
            self._pending_mix = (gen, mix)

        th = threading.Thread(target=work, daemon=True, name="riffwright-mix")
        self._mix_thread = th
        th.start()
        if wait:
            th.join()
            self._check_mix()
            if self._mix_gen != gen:
                self.remix(wait=True)
        else:
            self._poll.start()

    def mixing(self) -> bool:
        return self._mix_thread is not None and self._mix_thread.is_alive()

    def _check_mix(self) -> None:
        if self._mix_thread is not None and self._mix_thread.is_alive():
            return
        pending = self._pending_mix
        self._pending_mix = None
        self._poll.stop()
        if pending is not None:
            gen, mix = pending
            self.st.buf = mix
            self._apply_loop()
            if gen != self._mix_gen:  # edits arrived while rendering: render once more
                self.remix()

    def _session_event(self, event: SessionEvent, p: dict) -> None:
        """The transport follows the session like any view: what is heard changed (lanes,
        mute/solo/gain, the take heard, which lanes are context) -> a new mix; the loop
        region changed -> the loop points."""
        attr = p.get("attr")
        if event in (SessionEvent.TRACK_ADDED, SessionEvent.TRACK_REMOVED) or (
                event == SessionEvent.TRACK_CHANGED and attr in _AUDIBLE_TRACK_ATTRS) or (
                event == SessionEvent.SESSION_CHANGED and attr == "active_takes"):
            self.remix()
        elif event == SessionEvent.SESSION_CHANGED and attr == "loop":
            self._apply_loop()

    def _apply_loop(self) -> None:
        loop = self.session.loop
        n = self.st.buf.shape[0]
        if loop and self.loop_enabled:
            a = min(n, int(loop[0] * self.sr))
            b = min(n, int(loop[1] * self.sr))
            self.st.loop = (a, b) if b > a else None
        else:
            self.st.loop = None

    loop_enabled = True

    def set_loop_enabled(self, on: bool) -> None:
        self.loop_enabled = on
        self._apply_loop()

    def set_session(self, session: Session) -> None:
        self.stop()
        self.session.unsubscribe(self._session_event)
        self.session = session
        session.subscribe(self._session_event)
        self.sr = session.sample_rate
        self.st.buf = np.zeros((0, 2), np.float32)
        self.remix()

    # ---- transport
    def is_playing(self) -> bool:
        return self.st.playing

    def play(self) -> None:
        if self.st.playing:
            return
        if self.st.buf.shape[0] == 0 and self.session.frames:
            self.remix(wait=True)
        if self.st.loop and not (self.st.loop[0] <= self.st.pos < self.st.loop[1]):
            self.st.pos = self.st.loop[0]
        if self.st.pos >= self.st.buf.shape[0]:
            self.st.pos = 0
        self._clock_t0 = time.perf_counter()
        self._clock_pos0 = self.st.pos
        self.st.playing = True
        if self._use_audio:
            self._open_stream()
        self._timer.start()
        self.sig_state.emit("playing")

    def pause(self) -> None:
        if not self.st.playing:
            return
        self.st.pos = self._pos_frames()
        self.st.playing = False
        self._timer.stop()
        self.sig_state.emit("paused")
        self.sig_position.emit(self.position())

    def toggle(self) -> None:
        self.pause() if self.st.playing else self.play()

    def stop(self) -> None:
        self.st.playing = False
        self._timer.stop()
        self._close_stream()
        self.st.pos = self.st.loop[0] if self.st.loop else 0
        self.sig_state.emit("stopped")
        self.sig_position.emit(self.position())

    def seek(self, seconds: float) -> None:
        self.st.pos = max(0, int(seconds * self.sr))
        self._clock_t0 = time.perf_counter()
        self._clock_pos0 = self.st.pos
        self.sig_position.emit(self.position())

    def _pos_frames(self) -> int:
        if self._stream is not None or not self.st.playing:
            return self.st.pos
        # silent mode: advance on the wall clock (with the same loop/end rules)
        p = self._clock_pos0 + int((time.perf_counter() - self._clock_t0) * self.sr)
        loop = self.st.loop
        if loop and p >= loop[1]:
            p = loop[0] + (p - loop[0]) % max(1, loop[1] - loop[0])
        elif p >= self.st.buf.shape[0]:
            p = self.st.buf.shape[0]
            self.st.playing = False
        self.st.pos = p
        self._clock_t0 = time.perf_counter()
        self._clock_pos0 = p
        return p

    def position(self) -> float:
        return self._pos_frames() / self.sr

    def _tick(self) -> None:
        pos = self.position()
        self.sig_position.emit(pos)
        if not self.st.playing:
            self._timer.stop()
            self._close_stream()
            self.sig_state.emit("stopped")

    def close(self) -> None:
        self.st.playing = False
        self._timer.stop()
        self._close_stream()
