"""The generation flags shared by `generate` and `arrange`, and the request they make.

The flags named after a parameter of `engine.params` (`--cfg-context` for `cfg_context`)
take their type, range text, default and help from that table, and their value goes to
the request field of the same name; a flag left out leaves the field to the bundle's
default. The audio flags read their files into the request field of the same name
(`AUDIO_FLAGS`), and their file names become the provenance's labels.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.diffusion.context_features import BeatGrid
from engine.document.inputs import load_input, mix_down
from engine.document.tempo import estimate_beat_phase, estimate_tempo
from engine.errors import RiffwrightError
from engine.generation.request import GenerationRequest
from engine.params import PARAMS, cli_help

OUT_RATE = 48000


def _pair(text: str, sep: str = ":", kinds=(float, float), what: str = "START:END"):
    parts = text.split(sep)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    try:
        return tuple(k(p) for k, p in zip(kinds, parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def region(text):
    start, end = _pair(text, what="START:END in seconds")
    if start < 0:
        raise argparse.ArgumentTypeError(f"the region starts before 0 s ({text!r})")
    if start >= end:
        raise argparse.ArgumentTypeError(f"the region's start is not before its end ({text!r}: "
                                         "START must be less than END)")
    return start, end


def loop(text):
    return _pair(text, kinds=(int, float), what="N:FRACTION, e.g. 4:0.8")


def param_flag(p: argparse.ArgumentParser, name: str, metavar: str = "",
               default_text: str | None = None, filled: bool = False) -> None:
    """`--name` for the parameter `name` of the table: its type or choices and its help.
    `filled`: the flag carries the table's default when left out (else None: the bundle's)."""
    spec = PARAMS[name]
    kw = {"choices": spec.choices} if spec.choices else {"type": spec.kind, "metavar": metavar}
    if filled:
        kw["default"] = spec.default
    p.add_argument(spec.flag, help=cli_help(name, default_text), **kw)


def add_generation_arguments(p: argparse.ArgumentParser, arrange: bool = False) -> None:
    p.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="context audio the stem must fit; repeat it to sum several files "
                        "(aligned at zero) (default: none)")
    if not arrange:
        p.add_argument("--prompt", help="text prompt, e.g. \"walking upright bass\" "
                                        "(default: none)")
        p.add_argument("--reference", metavar="FILE",
                       help="audio reference: the stem should sound like it (default: none)")
    param_flag(p, "mix", "R")
    param_flag(p, "cfg_context", "W")
    param_flag(p, "cfg_clap", "W")
    param_flag(p, "harmony", "H")
    param_flag(p, "rhythm", "R")
    p.add_argument("--no-text-prior", action="store_true",
                   help="give the model the prompt's raw text embedding, not the text "
                        "prior's (default: the text prior when the bundle has one)")
    param_flag(p, "steps", "N")
    param_flag(p, "seed", "S", "a fresh random seed, printed and kept in the sidecar")
    param_flag(p, "takes", "K", filled=True)
    p.add_argument("--duration", type=float, metavar="SEC",
                   help="length in seconds; with --continue: how much to add (default: the "
                        "context's length, else 10)")
    param_flag(p, "stereo_width", "S")
    param_flag(p, "sampler")
    param_flag(p, "s_churn", "C")
    p.add_argument("--tempo", metavar="BPM|auto",
                   help="the song's tempo in quarter notes per minute, or auto to estimate "
                        "it (and where the beats fall) from the context; models trained with "
                        "a beat grid place their notes on it (default: none)")
    p.add_argument("--meter", default="4/4", metavar="N/D",
                   help="time signature with --tempo (default: 4/4)")
    p.add_argument("--downbeat", type=float, metavar="SEC",
                   help="where a bar starts, in seconds from the start of the audio, with "
                        "--tempo (default: 0, or with auto the first estimated beat)")
    p.add_argument("--model", metavar="DIR",
                   help="model bundle folder (default: RIFFWRIGHT_MODEL, the user data dir, "
                        "else the built-in one)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to run: auto prefers CUDA, then MPS, then the CPU "
                        "(default: auto)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder; existing files are never overwritten (required)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (default: one line per stem)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (default: progress shown)")


@dataclass(frozen=True)
class AudioFlag:
    """A flag whose file (or files) becomes the audio of the request field `field`."""

    field: str  # the request field, and the flag's dest
    role: str  # how an error about the file names it
    join: str = ""  # a flag taking several files: how their names join in the label
    combine: Callable | None = None  # a flag taking several files: their audio made one


AUDIO_FLAGS = (
    AudioFlag("context", "context", ", ", mix_down),
    AudioFlag("reference", "reference"),
    AudioFlag("variation_of", "variation source"),
    AudioFlag("source", "source"),
    AudioFlag("continue_from", "clip to continue"),
    AudioFlag("transition", "transition clip", " -> ", tuple),
)


def load(path, role):
    return load_input(path, OUT_RATE, role)


def _read_audio(args) -> tuple[dict, dict]:
    """The request's audio fields and their labels, from the audio flags given."""
    audio, labels = {}, {}
    for flag in AUDIO_FLAGS:
        given = getattr(args, flag.field, None)
        if not given:
            continue
        if flag.combine is None:
            audio[flag.field] = load(given, flag.role)
            labels[flag.field] = Path(given).name
        else:
            audio[flag.field] = flag.combine([load(f, flag.role) for f in given])
            labels[flag.field] = flag.join.join(Path(f).name for f in given)
    return audio, labels


def _region_fields(args) -> dict:
    """--inpaint or --regenerate with the --source it redraws, refused in any other mix."""
    inpaint, regenerate = getattr(args, "inpaint", None), getattr(args, "regenerate", None)
    if inpaint and regenerate:
        raise RiffwrightError("use either --inpaint or --regenerate")
    span = inpaint or regenerate
    source = getattr(args, "source", None)
    if span is not None and not source:
        raise RiffwrightError("--inpaint/--regenerate need --source FILE")
    if span is None and source:
        raise RiffwrightError("--source is only used with --inpaint or --regenerate")
    return {} if span is None else {"inpaint": span, "regenerate": bool(regenerate)}


def _beat_grid(args, context) -> tuple[float, float, float] | None:
    """--tempo/--meter/--downbeat as the request's (BPM, bar in quarters, downbeat); with
    --tempo auto, the tempo and the first beat are estimated from the context."""
    tempo = getattr(args, "tempo", None)
    if tempo is None:
        if getattr(args, "downbeat", None) is not None:
            raise RiffwrightError("--downbeat needs --tempo")
        return None
    down = args.downbeat
    if tempo == "auto":
        if context is None:
            raise RiffwrightError("--tempo auto estimates the tempo from --context; give one")
        bpm = estimate_tempo(context, OUT_RATE)
        if bpm is None:
            raise RiffwrightError("--tempo auto: no steady beat found in the context; give "
                              "the tempo in BPM")
        if down is None:
            down = estimate_beat_phase(context, OUT_RATE, bpm)
    else:
        try:
            bpm = float(tempo)
        except ValueError:
            raise RiffwrightError(f"--tempo expects BPM or auto, got {tempo!r}") from None
    try:
        grid = BeatGrid.from_meter(bpm, args.meter, down or 0.0)
    except ValueError as e:
        raise RiffwrightError(f"--tempo/--meter: {e}") from None
    return grid.bpm, grid.bar_beats, grid.downbeat


def request_from_args(args) -> GenerationRequest:
    """The request the flags describe; the audio files are read here (a bad one is one
    RiffwrightError line). A run without --seed gets a fresh one."""
    if args.duration is not None and args.duration <= 0:
        raise RiffwrightError(f"--duration must be positive, got {args.duration:g}")
    region_fields = _region_fields(args)
    values = {name: v for name in PARAMS if (v := getattr(args, name, None)) is not None}
    if "seed" not in values:
        values["seed"] = fresh_seed()
    audio, labels = _read_audio(args)
    grid = _beat_grid(args, audio.get("context"))
    return GenerationRequest(
        sample_rate=OUT_RATE, prompt=getattr(args, "prompt", None), beat_grid=grid,
        loop=getattr(args, "loop", None), text_prior=False if args.no_text_prior else None,
        labels=labels, **values, **region_fields, **audio)


def fresh_seed() -> int:
    """A new random seed per run, as the app draws one per generation: a second run gives
    new takes, and the seed is printed and kept in the sidecar so any take can be remade."""
    return secrets.randbelow(2**31 - 1 - 8)  # room for seed + take index
