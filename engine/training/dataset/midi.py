"""A minimal Standard MIDI File writer (format 0, one channel) for the FluidSynth renderer.

Times are in seconds: the file's tempo is 60 bpm at 1000 ticks per quarter, so one tick is
one millisecond and no tempo map is needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TICKS_PER_SECOND = 1000


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    end: float  # seconds
    pitch: int
    velocity: int


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def midi_bytes(
    notes: list[Note], program: int, *, drum: bool = False, reverb: int = 40, volume: int = 100
) -> bytes:
    """One track of `notes` on one channel (10 for drums) as a complete .mid file."""
    ch = 9 if drum else 0
    events: list[tuple[int, int, bytes]] = []  # (tick, order, data)
    events.append((0, 0, bytes([0xFF, 0x51, 0x03]) + (1_000_000).to_bytes(3, "big")))
    if drum:
        events.append((0, 1, bytes([0xB0 | ch, 0, 1])))  # bank MSB: fluidsynth drum bank
    events.append((0, 2, bytes([0xC0 | ch, program & 0x7F])))
    events.append((0, 3, bytes([0xB0 | ch, 7, max(0, min(127, volume))])))
    events.append((0, 3, bytes([0xB0 | ch, 10, 64])))
    events.append((0, 3, bytes([0xB0 | ch, 91, max(0, min(127, reverb))])))
    events.append((0, 3, bytes([0xB0 | ch, 93, 0])))
    for n in notes:
        on = max(0, round(n.start * TICKS_PER_SECOND))
        off = max(on + 1, round(n.end * TICKS_PER_SECOND))
        pitch = max(0, min(127, int(n.pitch)))
        vel = max(1, min(127, int(n.velocity)))
        events.append((on, 5, bytes([0x90 | ch, pitch, vel])))
        events.append((off, 4, bytes([0x80 | ch, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    body = bytearray()
    last = 0
    for tick, _, data in events:
        body += _varlen(tick - last) + data
        last = tick
    body += _varlen(TICKS_PER_SECOND) + bytes([0xFF, 0x2F, 0x00])  # end a second later
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_SECOND)
    return header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)
