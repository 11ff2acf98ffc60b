"""`riffwright eval cae|encoder|model`: measure a bundle's autoencoder, its encoder, or the
whole model's takes against a dataset's test split or a folder of contexts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.audio import SUPPORTED_EXTENSIONS
from engine.bundles.bundle import find_bundle, read_manifest
from engine.models.cae import load_cae
from engine.training.conditioner import evaluate_encoder
from engine.training.evaluate import evaluate_model


def add_parser(sub, parser_class) -> None:
    e = sub.add_parser("eval", help="evaluate a model")
    esub = e.add_subparsers(dest="eval_cmd", parser_class=parser_class, required=True)
    ec = esub.add_parser("cae")
    ec.add_argument("--data", required=True)
    ec.add_argument("--model", metavar="DIR")
    ec.add_argument("--out", default="eval-cae")
    ec.add_argument("--limit", type=int, default=20)
    ec.set_defaults(handler=run_cae)
    ee = esub.add_parser("encoder")
    ee.add_argument("--data", required=True)
    ee.add_argument("--model", metavar="DIR")
    ee.set_defaults(handler=run_encoder)
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
    em.add_argument("--harmony", type=float,
                    help="override the bundle's harmony guidance (0 = off)")
    em.add_argument("--rhythm", type=float,
                    help="override the bundle's rhythm guidance (0 = off)")
    em.add_argument("--no-text-prior", action="store_true",
                    help="give the model the prompt's raw text embedding")
    em.add_argument("--no-beat-grid", action="store_true",
                    help="do not give a model that takes a beat grid the tempo the data "
                         "knows (default: give it)")
    em.set_defaults(handler=run_model)


def _test_files(data: Path) -> list[Path]:
    """A dataset's test-split stems, or every audio file under a plain folder."""
    if (data / "manifest.json").exists():
        m = json.loads((data / "manifest.json").read_text())
        return [data / st["path"] for s in m["songs"] if s["split"] == "test"
                for st in s["stems"]]
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS)


def run_cae(args: argparse.Namespace) -> int:
    from engine.training.cae_eval import evaluate_cae

    bundle = find_bundle(args.model)
    cae = load_cae(bundle / read_manifest(bundle)["cae"]["file"])
    report = evaluate_cae(cae, _test_files(Path(args.data))[: args.limit], args.out)
    print(json.dumps({k: v for k, v in report.items() if k not in {"per_file", "pngs",
                                                                   "files"}}, indent=1))
    return 0


def run_encoder(args: argparse.Namespace) -> int:

    bundle = find_bundle(args.model)
    spec = read_manifest(bundle)["conditioner"]
    report = evaluate_encoder(bundle / spec["file"], args.data)
    print(json.dumps(report, indent=1, default=str))
    return 0


def run_model(args: argparse.Namespace) -> int:

    summary = evaluate_model(args.model, data=args.data, out=args.out, limit=args.limit,
                             steps=args.steps, contexts=args.contexts, targets=args.targets,
                             takes=args.takes, cfg_context=args.cfg_context,
                             cfg_clap=args.cfg_clap, harmony=args.harmony,
                             rhythm=args.rhythm,
                             seconds=args.seconds,
                             generated=args.generated, beat_grid=not args.no_beat_grid,
                             text_prior=False if args.no_text_prior else None)
    print(json.dumps(summary, indent=1))
    return 0
