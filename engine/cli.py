"""`riffwright` subcommands: the same engine as the app, headless.

Bad input exits with status 2 and one line naming the problem; nothing is written to --out
unless generation succeeded. The takes of one run are written to a hidden staging folder
inside --out and moved into place (each provenance sidecar before its WAV) only when all of
them were written: a full or read-only disk leaves --out as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from engine.errors import RiffwrightError
from engine.params import PARAMS, cli_help, pick

OUT_RATE = 48000


def _pair(text: str, sep: str = ":", kinds=(float, float), what: str = "START:END"):
    parts = text.split(sep)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    try:
        return tuple(k(p) for k, p in zip(kinds, parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _region(text):
    start, end = _pair(text, what="START:END in seconds")
    if start < 0:
        raise argparse.ArgumentTypeError(f"the region starts before 0 s ({text!r})")
    if start >= end:
        raise argparse.ArgumentTypeError(f"the region's start is not before its end ({text!r}: "
                                         "START must be less than END)")
    return start, end


def _loop(text):
    return _pair(text, kinds=(int, float), what="N:FRACTION, e.g. 4:0.8")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"riffwright: error: {message}\n")


def _add_gen_args(p: argparse.ArgumentParser, arrange: bool = False) -> None:
    p.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="context audio the stem must fit; repeat it to sum several files "
                        "(aligned at zero) (default: none)")
    if not arrange:
        p.add_argument("--prompt", help="text prompt, e.g. \"walking upright bass\" "
                                        "(default: none)")
        p.add_argument("--reference", metavar="FILE",
                       help="audio reference: the stem should sound like it (default: none)")
    p.add_argument("--mix", type=float, metavar="R", help=cli_help("mix"))
    p.add_argument("--cfg-context", type=float, metavar="W", help=cli_help("cfg_context"))
    p.add_argument("--cfg-clap", type=float, metavar="W", help=cli_help("cfg_clap"))
    p.add_argument("--no-text-prior", action="store_true",
                   help="give the model the prompt's raw text embedding, not the text "
                        "prior's (default: the text prior when the bundle has one)")
    p.add_argument("--steps", type=int, metavar="N", help=cli_help("steps"))
    p.add_argument("--seed", type=int, metavar="S",
                   help=cli_help("seed", "a fresh random seed, printed and kept in the "
                                         "sidecar"))
    p.add_argument("--takes", type=int, default=PARAMS["takes"].default, metavar="K",
                   help=cli_help("takes"))
    p.add_argument("--duration", type=float, metavar="SEC",
                   help="length in seconds; with --continue: how much to add (default: the "
                        "context's length, else 10)")
    p.add_argument("--stereo-width", type=float, metavar="S", help=cli_help("stereo_width"))
    p.add_argument("--sampler", choices=PARAMS["sampler"].choices, help=cli_help("sampler"))
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


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="riffwright", description="Riffwright: accompaniment stems that fit "
                 "your song. Without a subcommand, opens the app.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)

    g = sub.add_parser("generate", help="generate stems",
                       description="Generate stems. Files are named after the prompt (or the "
                                   "mode), the seed and the take, and never overwrite an "
                                   "existing file.")
    _add_gen_args(g)
    g.add_argument("--variation-of", metavar="FILE",
                   help="make a variation of this stem (default: none)")
    g.add_argument("--strength", type=float, metavar="S", help=cli_help("strength"))
    g.add_argument("--inpaint", type=_region, metavar="START:END",
                   help="redraw START-END seconds of --source; outside it the file is "
                        "unchanged (default: none)")
    g.add_argument("--regenerate", type=_region, metavar="START:END",
                   help="re-roll a region of --source, keeping it as close as --strength says "
                        "(default: none)")
    g.add_argument("--source", metavar="FILE",
                   help="the stem to inpaint or regenerate (default: none)")
    g.add_argument("--loop", type=_loop, metavar="N:FRACTION",
                   help="a loop that repeats N times; FRACTION of the steps are forced "
                        "periodic, e.g. 4:0.8 (default: no loop)")
    g.add_argument("--continue", dest="continue_from", metavar="FILE",
                   help="extend this clip past its end by --duration seconds (default: none)")
    g.add_argument("--transition", nargs=2, metavar=("FILE_A", "FILE_B"),
                   help="bridge FILE_A into FILE_B (default: none)")
    g.add_argument("--gap", type=float, default=PARAMS["gap"].default, metavar="SEC",
                   help=cli_help("gap"))

    a = sub.add_parser("arrange", help="iterative arrangement: one stem per prompt/reference, "
                       "each summed into the context of the next")
    _add_gen_args(a, arrange=True)
    a.add_argument("--prompt", action="append", dest="parts", type=lambda s: ("prompt", s),
                   default=[], help="one part per --prompt, in order (repeat it)")
    a.add_argument("--reference", action="append", dest="parts",
                   type=lambda s: ("reference", s),
                   help="a part that sounds like this audio file (repeat it)")

    m = sub.add_parser("models", help="list, inspect and create model bundles")
    msub = m.add_subparsers(dest="models_cmd", parser_class=_Parser, required=True)
    msub.add_parser("list")
    mi = msub.add_parser("info")
    mi.add_argument("dir", nargs="?")
    mn = msub.add_parser("init")
    mn.add_argument("--arch", choices=["tiny", "small", "base"], default="tiny")
    mn.add_argument("--cae-arch", choices=["tiny", "small"])
    mn.add_argument("--out", required=True)
    mn.add_argument("--seed", type=int, default=0)
    mn.add_argument("--cae", metavar="FILE", help="trained CAE weights to put in the bundle")
    mn.add_argument("--conditioner", metavar="FILE",
                    help="trained built-in encoder weights to put in the bundle")

    b = sub.add_parser("bench", help="time generation, encode and decode")
    b.add_argument("--arch", choices=["tiny", "small", "base"])
    b.add_argument("--model", metavar="DIR")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--repeat", type=int, default=1)
    b.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--gui", action="store_true",
                   help="measure the app instead: event-loop stalls and lane redraw time")

    from engine import tasks

    tasks.add_parsers(sub, _Parser)
    return ap


def _version() -> str:
    from engine import __version__

    return f"riffwright {__version__}"


def _progress_printer(quiet: bool):
    last = [None]

    def show(ev):
        if quiet:
            return
        key = (ev.stage, ev.step)
        if key == last[0]:
            return
        last[0] = key
        eta = f", ~{ev.eta_s:.0f} s left" if ev.eta_s else ""
        print(f"\r[{ev.stage}] {ev.message}{eta}        ", end="", file=sys.stderr, flush=True)
        if ev.stage == "done":
            print(file=sys.stderr)

    return show


def _drive(gen, show):
    while True:
        try:
            show(next(gen))
        except StopIteration as stop:
            return stop.value


def _load(path, role):
    from engine.document.inputs import load_input

    return load_input(path, OUT_RATE, role)


def _request_from_args(args, GenerationRequest):
    from engine.document.inputs import mix_down

    labels = {}
    kw = {}
    if args.context:
        kw["context"] = mix_down([_load(f, "context") for f in args.context])
        labels["context"] = ", ".join(Path(f).name for f in args.context)
    if getattr(args, "reference", None):
        kw["reference"] = _load(args.reference, "reference")
        labels["reference"] = Path(args.reference).name
    if getattr(args, "variation_of", None):
        kw["variation_of"] = _load(args.variation_of, "variation source")
        labels["variation_of"] = Path(args.variation_of).name
    region = getattr(args, "inpaint", None) or getattr(args, "regenerate", None)
    if getattr(args, "inpaint", None) and getattr(args, "regenerate", None):
        raise RiffwrightError("use either --inpaint or --regenerate")
    if region is not None:
        if not args.source:
            raise RiffwrightError("--inpaint/--regenerate need --source FILE")
        kw["source"] = _load(args.source, "source")
        labels["source"] = Path(args.source).name
        kw["inpaint"] = region
        kw["regenerate"] = bool(getattr(args, "regenerate", None))
    elif getattr(args, "source", None):
        raise RiffwrightError("--source is only used with --inpaint or --regenerate")
    if getattr(args, "continue_from", None):
        kw["continue_from"] = _load(args.continue_from, "clip to continue")
        labels["continue_from"] = Path(args.continue_from).name
    if getattr(args, "transition", None):
        kw["transition"] = tuple(_load(f, "transition clip") for f in args.transition)
        kw["gap"] = args.gap
        labels["transition"] = " -> ".join(Path(f).name for f in args.transition)
    if args.duration is not None and args.duration <= 0:
        raise RiffwrightError(f"--duration must be positive, got {args.duration:g}")
    return GenerationRequest(
        sample_rate=OUT_RATE, prompt=getattr(args, "prompt", None), mix=args.mix,
        cfg_context=args.cfg_context, cfg_clap=args.cfg_clap, steps=args.steps,
        seed=fresh_seed() if args.seed is None else args.seed, takes=args.takes,
        duration=args.duration,
        stereo_width=0.0 if args.stereo_width is None else args.stereo_width, strength=getattr(args, "strength", None),
        loop=getattr(args, "loop", None), sampler=args.sampler, labels=labels,
        text_prior=False if args.no_text_prior else None, **kw)


def fresh_seed() -> int:
    """A new random seed per run, as the app draws one per generation: a second run gives
    new takes, and the seed is printed and kept in the sidecar so any take can be remade."""
    import secrets

    return secrets.randbelow(2**31 - 1 - 8)  # room for seed + take index


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: lower case, words joined by hyphens."""
    import re

    words = re.findall(r"[a-z0-9]+", text.lower())
    out = ""
    for w in words:
        nxt = f"{out}-{w}" if out else w
        if len(nxt) > limit:
            break
        out = nxt
    return out or (words[0][:limit] if words else "")


def stem_label(req) -> str:
    """What made a stem, for its file name: the mode (unless it is plain accompaniment or a
    single stem) and the prompt, or the mode alone without a prompt."""
    prompt = _slug(req.prompt or "")
    mode = req.mode
    if not prompt:
        return mode
    return prompt if mode in ("accompaniment", "single") else f"{mode}_{prompt}"


def unique_path(out: Path, stem_name: str, suffix: str = ".wav") -> Path:
    """`out/stem_name.wav`, or with _2, _3… when that file (or its .json sidecar) exists:
    outputs never overwrite earlier ones."""
    k = 1
    while True:
        name = stem_name if k == 1 else f"{stem_name}_{k}"
        path = out / f"{name}{suffix}"
        if not path.exists() and not path.with_suffix(".json").exists():
            return path
        k += 1


def _stem_name(stem, label: str, index: int | None = None) -> str:
    part = f"part{index + 1}_" if index is not None else ""
    return f"{part}{label}_seed{stem.seed}_take{stem.take + 1}"


STAGING_PREFIX = ".riffwright-staging-"


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be a folder before any work (a file, /dev/null)."""
    if os.path.lexists(out) and not out.is_dir():
        raise RiffwrightError(f"--out {out} is not a folder; give a folder for the takes")


def _clean_stale_staging(out: Path, min_age_s: float = 3600.0) -> None:
    """Remove staging folders a killed run left in `out` (only ours, only old ones)."""
    from engine.fsutil import clean_stale_temps

    clean_stale_temps(out, min_age_s)
    now = time.time()
    for d in out.glob(STAGING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if d.is_dir() and not d.is_symlink() and now - d.stat().st_mtime >= min_age_s:
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _staged(out: Path):
    """Yield a hidden staging folder inside `out`; when the block succeeds, move everything
    in it into `out` (a provenance sidecar before its WAV, so no WAV ever lands without
    one). On any failure nothing reaches `out` and the staging folder is removed; write
    errors become one `RiffwrightError` line."""
    from engine.fsutil import user_write

    with user_write(f"cannot write to {out}"):
        out.mkdir(parents=True, exist_ok=True)
        _clean_stale_staging(out)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        with user_write(f"cannot write the takes to {out}"):
            yield stage
            files = sorted(stage.iterdir(), key=lambda f: (f.stem, f.suffix != ".json"))
            for f in files:
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _file_mode() -> int:
    """rw for everyone the umask allows (0644 with the usual 022), as other programs write."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _save_stems(stems, out: Path, mode: str, label: str, index=None,
                stage: Path | None = None) -> list[dict]:
    """Write `stems` into `stage` (default: `out`) under names free in `out`; the rows name
    their place in `out`."""
    rows = []
    for s in stems:
        path = unique_path(out, _stem_name(s, label, index))
        if stage is not None:
            while (stage / path.name).exists():  # two takes of one run never share a name
                path = unique_path(out, path.stem + "_b")
        written = s.save((stage or out) / path.name)
        for f in (written, written.with_suffix(".json")):
            os.chmod(f, _file_mode())
        rows.append({"path": str(path), "seconds": round(s.seconds, 6),
                     "sample_rate": s.sample_rate, "channels": s.channels, "seed": s.seed,
                     "take": s.take, "mode": mode, "provenance": str(path.with_suffix(".json"))})
    return rows


def _bundle_defaults(req, args, bundle):
    """The request with what the bundle decides: the stereo width (stereo, like the app,
    unless the bundle says otherwise or --stereo-width 0)."""
    if args.stereo_width is not None:
        return req
    return replace(req, stereo_width=pick("stereo_width", None, bundle.defaults))


def cmd_generate(args) -> int:
    from engine.bundles.bundle import load_bundle
    from engine.generation.driver import Generator, pick_device
    from engine.generation.request import GenerationRequest

    _check_out(Path(args.out))
    req = _request_from_args(args, GenerationRequest)
    device = pick_device(args.device)
    bundle = load_bundle(args.model, device=device)
    gen = Generator(bundle)
    req = _bundle_defaults(req, args, bundle)
    gen.resolve(req)  # validate before any work
    stems = _drive(gen.run(req), _progress_printer(args.quiet or args.json))
    with _staged(Path(args.out)) as stage:
        rows = _save_stems(stems, Path(args.out), req.mode, stem_label(req), stage=stage)
    _report(args, rows, bundle, device)
    return 0


def cmd_arrange(args) -> int:
    from engine.arrange import Part, arrange, arrangement_mix
    from engine.audio import write_audio
    from engine.bundles.bundle import load_bundle
    from engine.generation.driver import Generator, pick_device
    from engine.generation.request import GenerationRequest

    if not args.parts:
        raise RiffwrightError("arrange needs at least one --prompt or --reference")
    _check_out(Path(args.out))
    base = _request_from_args(args, GenerationRequest)
    parts = [Part(kind, value, _load(value, "reference") if kind == "reference" else None)
             for kind, value in args.parts]
    device = pick_device(args.device)
    bundle = load_bundle(args.model, device=device)
    base = _bundle_defaults(base, args, bundle)
    stems = _drive(arrange(Generator(bundle), base, parts),
                   _progress_printer(args.quiet or args.json))
    mix = arrangement_mix(stems, base.context, OUT_RATE)
    out = Path(args.out)
    rows = []
    with _staged(out) as stage:
        for i, (s, part) in enumerate(zip(stems, parts)):
            label = _slug(part.value) if part.kind == "prompt" \
                else _slug(Path(part.value).stem) or "reference"
            rows += _save_stems([s], out, "arrange", label, index=i, stage=stage)
        mix_path = unique_path(out, f"arrangement_mix_seed{base.seed}")
        write_audio(stage / mix_path.name, mix, OUT_RATE)
        os.chmod(stage / mix_path.name, _file_mode())
    _report(args, rows, bundle, device)
    return 0


def _report(args, rows, bundle, device) -> None:
    if args.json:
        print(json.dumps({"model": str(bundle.path), "model_hash": bundle.hash,
                          "device": str(device), "stems": rows}))
    else:
        for r in rows:
            print(f"{r['path']}  {r['seconds']:.2f} s  {r['channels']} ch  seed {r['seed']}")
        if rows and getattr(args, "seed", None) is None:
            print(f"seed {rows[0]['seed']} was drawn at random: --seed {rows[0]['seed']} "
                  "makes the same take again")


def cmd_models(args) -> int:
    from engine.bundles import bundle as B

    if args.models_cmd == "list":
        rows = B.list_bundles()
        if not rows:
            print("no bundles found (see `riffwright models init --help`)")
        for r in rows:
            if "error" in r:
                print(f"{r['path']}  [{r['origin']}]  BROKEN: {r['error']}")
            else:
                print(f"{r['name']:<28} {r['arch'] or '?':<6} {r['sample_rate']} Hz  "
                      f"[{r['origin']}]  {r['path']}")
        return 0
    if args.models_cmd == "info":
        path = B.find_bundle(args.dir)
        m = B.read_manifest(path)
        files = {f.name: f.stat().st_size for f in sorted(path.glob("*.safetensors"))}
        lat = m["latent"]
        info = {"path": str(path), "name": m.get("name"), "format": m["format"],
                "trained": m.get("trained", True), "sample_rate": m["sample_rate"],
                "latent": {"dim": lat["dim"], "hop": lat["hop"]},
                "sigma_data": m["sigma_data"], "window_frames": m["window_frames"],
                "cae": m["cae"], "conditioner": m["conditioner"], "ldm": m["ldm"],
                "prior": m.get("prior"), "defaults": m["defaults"], "files_bytes": files,
                "hash": B.bundle_hash(path)}
        print(json.dumps(info, indent=2))
        return 0
    out = B.init_bundle(args.arch, args.out, cae_arch=args.cae_arch, seed=args.seed,
                        cae_file=args.cae, conditioner_file=args.conditioner)
    print(f"wrote a {args.arch} bundle (diffusion model untrained) to {out}")
    return 0


def cmd_bench(args) -> int:
    from engine.bench import print_report, run_bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_bench(arch=args.arch, model=args.model, device=args.device, steps=args.steps,
                       repeat=args.repeat)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


COMMANDS = {"generate": cmd_generate, "arrange": cmd_arrange, "models": cmd_models,
            "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    from engine import tasks
    from engine.fsutil import os_error_text, write_error_types

    handler = COMMANDS.get(args.command) or tasks.COMMANDS.get(args.command)
    try:
        return handler(args)
    except RiffwrightError as e:
        print(f"riffwright: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("riffwright: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except write_error_types() as e:  # a full or read-only disk, a name too long...
        print(f"riffwright: error: {os_error_text(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
