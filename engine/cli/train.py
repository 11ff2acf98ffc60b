"""`riffwright train cae|encoder|ldm`: train the consistency autoencoder, the built-in
text/audio encoder or the latent diffusion model. A --config JSON file sets a trainer's
options; the flags given override it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.errors import RiffwrightError
from engine.training.conditioner import train_encoder

# `train cae` options that override the --config file's keys of the same name when given
CAE_OPTIONS = ("init", "freeze_encoder", "head_channels", "spectral_weight", "mel_weight",
               "low_weight", "mix_prob", "balance_families", "family_weights")


def add_parser(sub, parser_class) -> None:
    t = sub.add_parser("train", help="train the CAE, the text/audio encoder or the LDM")
    tsub = t.add_subparsers(dest="train_cmd", parser_class=parser_class, required=True)
    for name, handler in (("cae", run_cae), ("encoder", run_encoder), ("ldm", run_ldm)):
        tp = tsub.add_parser(name)
        tp.add_argument("--data", required=True, help="dataset folder (with manifest.json)")
        tp.add_argument("--out", required=True, help="run folder (checkpoints, log)")
        tp.add_argument("--config", help="JSON config file (overrides defaults)")
        tp.add_argument("--steps", type=int)
        tp.add_argument("--device", default="auto")
        if name == "cae":
            _add_cae_options(tp)
        if name == "ldm":
            tp.add_argument("--bundle", required=True,
                            help="bundle whose CAE and conditioner the LDM is trained with")
            tp.add_argument("--arch", default="tiny", choices=["tiny", "small", "base"])
        tp.set_defaults(handler=handler)


def _add_cae_options(tp) -> None:
    tp.add_argument("--init", "--from", dest="init", metavar="CAE",
                    help="start from this CAE weights file instead of a fresh --config arch")
    tp.add_argument("--freeze-encoder", action="store_true", default=None,
                    help="train the decoder alone: latents (and a diffusion model trained on "
                         "them) stay valid while the decoder improves")
    tp.add_argument("--head-channels", type=int,
                    help="give the decoder a wider output head of this many units (it starts "
                         "at zero, so the decoder first sounds as before)")
    tp.add_argument("--spectral-weight", type=float,
                    help="weight of the multi-resolution STFT loss on the one-step decode")
    tp.add_argument("--mel-weight", type=float,
                    help="weight of the log-mel distance on the one-step decode")
    tp.add_argument("--low-weight", type=float,
                    help="weight of the fine-resolution distance below 1 kHz on the one-step "
                         "decode (a bass's partials)")
    tp.add_argument("--mix-prob", type=float, help="share of crops that mix stems of a song")
    tp.add_argument("--balance-families", action="store_true", default=None,
                    help="draw single stems, every instrument family equally often")
    tp.add_argument("--family-weight", dest="family_weights", action="append", type=_weight,
                    metavar="FAMILY=W", help="with --balance-families, draw FAMILY W times as "
                                             "often (repeatable), e.g. bass=3")


def _weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        w = float(value)
    except ValueError:
        w = -1.0
    if not sep or not name or not w >= 0:
        raise argparse.ArgumentTypeError(f"expected FAMILY=WEIGHT (a non-negative number), "
                                         f"got {text!r}")
    return name.strip(), w


def _config(args: argparse.Namespace) -> dict:
    """The --config file's options (none without one), with --steps over them."""
    kw = {}
    if args.config:
        try:
            kw = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RiffwrightError(f"cannot read config {args.config}: {e}") from None
    if args.steps:
        kw["steps"] = args.steps
    return kw


def _device(args: argparse.Namespace) -> str:
    from engine.generation.driver import pick_device

    return str(pick_device(args.device))


def run_cae(args: argparse.Namespace) -> int:
    from engine.training.cae import train_cae

    device = _device(args)
    kw = _config(args)
    if args.family_weights:  # --family-weight pairs, over the config file's weights
        args.family_weights = {**kw.get("family_weights", {}), **dict(args.family_weights)}
    kw.update({k: getattr(args, k) for k in CAE_OPTIONS if getattr(args, k) is not None})
    path = train_cae(args.data, args.out, device=device, **kw)
    print(f"CAE weights: {path}")
    return 0


def run_encoder(args: argparse.Namespace) -> int:

    _device(args)  # an unusable --device fails before the data is read
    result = train_encoder(args.data, Path(args.out) / "conditioner.safetensors",
                           **_config(args))
    print(f"encoder weights: {result['out_path']} (id {result['id']})")
    return 0


def run_ldm(args: argparse.Namespace) -> int:
    from engine.training.ldm import LDMTrainConfig, train_ldm

    device = _device(args)
    cfg = LDMTrainConfig.from_file(args.config, steps=args.steps, arch=args.arch)
    path = train_ldm(args.data, args.out, args.bundle, cfg, device=device)
    print(f"bundle: {path}")
    return 0
