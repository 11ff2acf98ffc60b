"""engine.training.dataset.grooves: the musical properties of the composed parts the data
needs (walking bass, bass arpeggios, bass fills into the next phrase, odd meters, dense
contexts). Pure numpy: no renderer needed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.dataset.grooves import (
    KICK,
    SNARE,
    STYLES,
    GrooveComposer,
    _Grid,
    parse_numeral,
)
from engine.training.dataset.parts import PITCH_NAMES_FLAT, PITCH_NAMES_MINOR

STEPS = {"4/4": 16, "3/4": 12, "6/8": 12, "5/4": 20, "7/8": 14}


def _ctx(spb=16, tempo=120.0, prog="ii7 V7 Imaj7 vi7", tonic=0, n_bars=8, swing=0.5):
    chords = [parse_numeral(s, tonic) for s in (prog.split() * n_bars)[:n_bars]]
    scale = [(tonic + i) % 12 for i in (0, 2, 4, 5, 7, 9, 11)]
    return dict(grid=_Grid(tempo, spb, swing), spb=spb, chords=chords, n_bars=n_bars,
                scale=scale, style="test")


def _bars(notes, grid, spb, n_bars):
    """Notes grouped by the bar their onset falls in, with the onset's step in the bar."""
    bar_s = grid.time(spb)
    out = [[] for _ in range(n_bars)]
    for n in notes:
        b = int((n.start + 0.02) // bar_s)
        step = (n.start - grid.time(b * spb)) / grid.beat * 4
        if b < n_bars:
            out[b].append((step, n))
    return out


@pytest.mark.parametrize("spb", [16, 20, 12])
def test_walking_bass_one_note_per_beat_root_on_one_approach_on_the_last(spb):
    n_bars = 8
    for seed in range(5):
        comp = GrooveComposer(np.random.default_rng(seed), 60.0)
        ctx = _ctx(spb=spb, n_bars=n_bars, swing=0.66)
        part = comp._pitched(ctx, "bass", 32, "walking")
        bars = _bars(part.notes, ctx["grid"], spb, n_bars)
        for b, notes in enumerate(bars[:-1]):
            root = ctx["chords"][b][0]
            next_root = ctx["chords"][b + 1][0]
            steps = [round(s) for s, _ in notes]
            assert steps == list(range(0, spb, 4)), steps  # one note on every beat
            pitches = [n.pitch for _, n in notes]
            assert pitches[0] % 12 == root  # the chord's root on beat 1
            nxt = bars[b + 1][0][1].pitch
            assert nxt % 12 == next_root
            assert 1 <= abs(pitches[-1] - nxt) <= 2  # the last beat leads into the next root
            line = pitches + [nxt]
            assert max(abs(a - c) for a, c in zip(line, line[1:], strict=False)) <= 7
            assert len(set(pitches)) >= len(pitches) - 1  # it walks, it does not stand
            beat = ctx["grid"].beat
            assert all(n.end - n.start > 0.6 * beat for _, n in notes)  # legato quarters


def test_bass_arpeggio_plays_chord_tones_in_order():
    comp = GrooveComposer(np.random.default_rng(1), 30.0)
    ctx = _ctx(prog="I vi IV V", n_bars=6)
    part = comp._pitched(ctx, "bass", 33, "arp")
    bars = _bars(part.notes, ctx["grid"], 16, 6)
    for b, notes in enumerate(bars):
        if b % 4 == 3:
            continue  # phrase end: may be a fill
        root, ivs = ctx["chords"][b]
        pcs = {(root + i) % 12 for i in ivs}
        assert notes and all(n.pitch % 12 in pcs for _, n in notes)
        assert len({n.pitch for _, n in notes}) >= 3  # root, third and fifth at least
        assert notes[0][1].pitch % 12 == root


def test_bass_fills_run_into_the_next_phrase():
    """Over many seeds, some phrase-end bars end with a stepwise run of scale tones that
    arrives next to the next bar's root; no other bar does."""
    fills = 0
    for seed in range(30):
        comp = GrooveComposer(np.random.default_rng(seed), 30.0)
        ctx = _ctx(prog="I IV V I", n_bars=9)
        part = comp._pitched(ctx, "bass", 33, "rock")
        bars = _bars(part.notes, ctx["grid"], 16, 9)
        for b, notes in enumerate(bars[:-1]):
            last_beat = [n for s, n in notes if s >= 11.5]
            run = len(last_beat) >= 2 and len({n.pitch for n in last_beat}) == len(last_beat)
            if b % 4 != 3:
                assert not run or len({n.pitch for n in last_beat}) < 3
                continue
            if not run:
                continue
            fills += 1
            ps = [n.pitch for n in last_beat]
            diffs = np.diff(ps)
            assert np.all(diffs > 0) or np.all(diffs < 0)  # one direction
            assert all(1 <= abs(d) <= 3 for d in diffs)  # by step
            assert all(p % 12 in ctx["scale"] for p in ps[:-1])
            target = bars[b + 1][0][1].pitch
            assert 1 <= abs(ps[-1] - target) <= 2
    assert 15 <= fills <= 45  # about half of the 60 phrase ends


@pytest.mark.parametrize("style,meter", [("5/4 jazz", "5/4"), ("7/8 rock", "7/8")])
def test_odd_meters_have_bars_of_their_length(style, meter):
    spb = STEPS[meter]
    assert STYLES[style]["meter"] == meter
    for seed in range(4):
        song = GrooveComposer(np.random.default_rng(seed), 20.0).compose("x", style=style)
        assert song.meter == meter
        grid = _Grid(song.tempo, spb, 0.5)
        bar_s = grid.time(spb)
        drums = [p for p in song.parts if p.drum]
        assert drums and len(song.parts) >= 3
        kicks = [n.start for n in drums[0].notes if n.pitch == KICK]
        # a kick on every downbeat of the odd bar (except where a fill takes the bar's end)
        downbeats = np.arange(0, 20.0 - bar_s, bar_s)
        hit = [min(abs(k - d) for k in kicks) < 0.02 for d in downbeats]
        assert all(hit)
        snares = [n.start for n in drums[0].notes if n.pitch == SNARE]
        assert snares
        for p in song.parts:
            if p.role == "bass":
                onsets = [(n.start % bar_s) for n in p.notes]
                assert min(abs(o) for o in onsets) < 0.02
                assert sum(o < 0.02 or o > bar_s - 0.02 for o in onsets) >= 20.0 / bar_s - 2


def test_tempi_keys_and_density_of_composed_songs():
    rng = np.random.default_rng(0)
    tempi, tonics, sizes, meters = [], [], [], set()
    for _ in range(400):
        song = GrooveComposer(rng, 12.0).compose("x")
        q = song.tempo * (1.5 if song.meter == "6/8" else 1.0)  # quarter notes per minute
        tempi.append(q)
        name, mode = song.key.split()
        tonics.append((PITCH_NAMES_MINOR if mode == "minor" else PITCH_NAMES_FLAT).index(name))
        sizes.append(len(song.parts))
        meters.add(song.meter)
    assert min(tempi) <= 66 and max(tempi) >= 174 and max(tempi) <= 184
    counts = np.array([tonics.count(k) for k in set(tonics)])
    assert len(counts) == 12 and counts.min() > 400 / 12 * 0.5  # keys spread evenly
    assert meters == {"4/4", "3/4", "6/8", "5/4", "7/8"}
    assert min(sizes) >= 2 and max(sizes) == 7  # contexts of 1..6 other instruments
    assert np.mean([s >= 5 for s in sizes]) > 0.3  # dense, as produced music is


def test_a_walking_bass_at_the_edge_of_its_range_still_lands():
    """Generator 2, seed 0, songs 961 and 1043 of the varied build: every approach note to
    the next root lay outside the bass's range, and composing raised ValueError (two songs
    lost). Those draws are gone with generator 3, so every walking floor is tried."""
    from engine.training.dataset.grooves import WALKING_FLOOR

    for floor in range(WALKING_FLOOR[0], WALKING_FLOOR[1] + 1):
        for seed in range(6):
            comp = GrooveComposer(np.random.default_rng(seed), 12.0)
            comp._bass_floor = lambda lo, floors, f=floor: max(lo, f)
            for prog in ("ii7 V7 Imaj7 vi7", "i bVII bVI V7", "I IV V I"):
                part = comp._walking(_ctx(prog=prog, tonic=seed * 5 % 12), 33)
                assert part.notes and min(n.pitch for n in part.notes) >= floor


def test_bass_lines_spread_over_the_registers_of_real_bass_parts():
    """Generator 3 draws each bass part's lowest root between E1 and E2: the composed bass
    lines centre near E2 (the dev set's real bass parts: MIDI 40.4; generator 2's parts,
    same seed: 35, 10-90 % 31-39) and spread over more than an octave."""
    rng = np.random.default_rng(1)
    medians = []
    for _ in range(300):
        song = GrooveComposer(rng, 12.0).compose("x")
        for part in song.parts:
            if part.role == "bass" and part.notes:
                pitches = [n.pitch for n in part.notes]
                medians.append(float(np.median(pitches)))
    assert len(medians) > 150
    assert 37 <= np.median(medians) <= 45
    assert np.percentile(medians, 90) - np.percentile(medians, 10) >= 10
