"""Subcommands for building data, training and evaluating: `dataset`, `train`, `eval`.

Kept apart from `engine.cli` so the generation commands stay small; the heavy modules are
imported inside each handler.
"""

from __future__ import annotations

import argparse

from engine.audio import SUPPORTED_EXTENSIONS
from engine.bundles.bundle import find_bundle, read_manifest
from engine.errors import RiffwrightError
from engine.models.cae import load_cae
from engine.training.conditioner import evaluate_encoder, train_encoder
from engine.training.dataset.command import add_build_arguments, run_build
from engine.training.evaluate import evaluate_model


def add_parsers(sub, parser_class) -> None:
    d = sub.add_parser("dataset", help="build a multitrack stem dataset")
    dsub = d.add_subparsers(dest="dataset_cmd", parser_class=parser_class, required=True)

    add_build_arguments(dsub.add_parser("build", help="render or import songs into stems"))

    t = sub.add_parser("train", help="train the CAE, the text/audio encoder or the LDM")
    tsub = t.add_subparsers(dest="train_cmd", parser_class=parser_class, required=True)
    for name in ("cae", "encoder", "ldm"):
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

    e = sub.add_parser("eval", help="evaluate a model")
    esub = e.add_subparsers(dest="eval_cmd", parser_class=parser_class, required=True)
    ec = esub.add_parser("cae")
    ec.add_argument("--data", required=True)
    ec.add_argument("--model", metavar="DIR")
    ec.add_argument("--out", default="eval-cae")
    ec.add_argument("--limit", type=int, default=20)
    ee = esub.add_parser("encoder")
    ee.add_argument("--data", required=True)
    ee.add_argument("--model", metavar="DIR")
    em = esub.add_parser("model")
    em.add_argument("--data", help="dataset folder; its test split is used")
    em.add_argument("--contexts", help="a folder of context clips, or of case folders "
                    "(context.flac, target.flac, role.txt: the judge's layout)")
    em.add_argument("--targets", help="ground-truth stems for --contexts (plain clips)")
    em.add_argument("--generated", metavar="DIR",
                    help="measure takes already made (DIR/<case>/*.wav) instead of generating")
    em.add_argument("--seconds", type=float, default=10.0, help="length judged per context")
    em.add_argument("--model", metavar="DIR")
    em.add_argument("--out", default="eval-model")
    em.add_argument("--limit", type=int, default=16)
    em.add_argument("--steps", type=int)
    em.add_argument("--takes", type=int, default=1, help="generations per context (averaged)")
    em.add_argument("--cfg-context", type=float, help="override the bundle's context guidance")
    em.add_argument("--cfg-clap", type=float, help="override the bundle's CLAP guidance")
    em.add_argument("--no-text-prior", action="store_true",
                    help="give the model the prompt's raw text embedding")


# `train cae` options that override the --config file's keys of the same name when given
CAE_OPTIONS = ("init", "freeze_encoder", "head_channels", "spectral_weight", "mel_weight",
               "mix_prob", "balance_families")


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
    tp.add_argument("--mix-prob", type=float, help="share of crops that mix stems of a song")
    tp.add_argument("--balance-families", action="store_true", default=None,
                    help="draw single stems, every instrument family equally often")


def cmd_dataset(args: argparse.Namespace) -> int:
    run_build(args)
    return 0


def _config(path) -> dict:
    import json
    from pathlib import Path

    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RiffwrightError(f"cannot read config {path}: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.generation.driver import pick_device

    device = str(pick_device(args.device))
    if args.train_cmd == "cae":
        from engine.training.cae import train_cae

        kw = _config(args.config)
        if args.steps:
            kw["steps"] = args.steps
        kw.update({k: getattr(args, k) for k in CAE_OPTIONS if getattr(args, k) is not None})
        path = train_cae(args.data, args.out, device=device, **kw)
        print(f"CAE weights: {path}")
    elif args.train_cmd == "encoder":
        kw = _config(args.config)
        if args.steps:
            kw["steps"] = args.steps
        result = train_encoder(args.data, Path(args.out) / "conditioner.safetensors", **kw)
        print(f"encoder weights: {result['out_path']} (id {result['id']})")
    else:
        from engine.training.ldm import LDMTrainConfig, train_ldm

        cfg = LDMTrainConfig.from_file(args.config, steps=args.steps, arch=args.arch)
        path = train_ldm(args.data, args.out, args.bundle, cfg, device=device)
        print(f"bundle: {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    if args.eval_cmd == "cae":
        from engine.training.cae_eval import evaluate_cae

        bundle = find_bundle(args.model)
        cae = load_cae(bundle / read_manifest(bundle)["cae"]["file"])
        data = Path(args.data)
        if (data / "manifest.json").exists():
            m = json.loads((data / "manifest.json").read_text())
            files = [data / st["path"] for s in m["songs"] if s["split"] == "test"
                     for st in s["stems"]]
        else:
            files = sorted(p for p in data.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS)
        report = evaluate_cae(cae, files[: args.limit], args.out)
        print(json.dumps({k: v for k, v in report.items() if k not in {"per_file", "pngs",
                                                                       "files"}}, indent=1))
    elif args.eval_cmd == "encoder":
        bundle = find_bundle(args.model)
        spec = read_manifest(bundle)["conditioner"]
        report = evaluate_encoder(bundle / spec["file"], args.data)
        print(json.dumps(report, indent=1, default=str))
    else:
        summary = evaluate_model(args.model, data=args.data, out=args.out, limit=args.limit,
                                 steps=args.steps, contexts=args.contexts, targets=args.targets,
                                 takes=args.takes, cfg_context=args.cfg_context,
                                 cfg_clap=args.cfg_clap, seconds=args.seconds,
                                 generated=args.generated,
                                 text_prior=False if args.no_text_prior else None)
        print(json.dumps(summary, indent=1))
    return 0


COMMANDS = {"dataset": cmd_dataset, "train": cmd_train, "eval": cmd_eval}
