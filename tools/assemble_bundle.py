"""Assemble a bundle from a `train ldm` export and a decoder trained further on the same
encoder, and install it (e.g. as the shipped default bundle).

    python tools/assemble_bundle.py LDM_BUNDLE_DIR OUT_DIR [--cae CAE.safetensors] [--card MD]
        [--name NAME] [--description TEXT] [--default cfg_context=8 ...] [--prior RUN_DIR]

The replacement CAE must have exactly the encoder the diffusion model's latents came from:
every `encoder.*` tensor is compared, and a mismatch refuses the swap. The result is written
to a staging folder and renamed into place, then loaded once to check it. `--prior RUN_DIR`
adds a text prior built from a `train ldm` run's crop embeddings (RUN_DIR/latents and
RUN_DIR/clap, made with the bundle's conditioner).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from engine.bundles.bundle import load_bundle, read_manifest, write_manifest
from engine.errors import BundleError
from engine.weights import read_checkpoint


def same_encoder(a: Path, b: Path) -> bool:
    ta, _, _ = read_checkpoint(a)
    tb, _, _ = read_checkpoint(b)
    keys = sorted(k for k in ta if k.startswith("encoder."))
    return keys == sorted(k for k in tb if k.startswith("encoder.")) and all(
        torch.equal(ta[k], tb[k]) for k in keys)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("out")
    ap.add_argument("--cae", help="a CAE whose decoder was trained further (same encoder)")
    ap.add_argument("--card", help="MODEL_CARD.md to include")
    ap.add_argument("--name")
    ap.add_argument("--description")
    ap.add_argument("--default", action="append", default=[], metavar="KEY=VALUE",
                    help="a generation default (cfg_context=8, steps=30, ...); repeatable")
    ap.add_argument("--prior", metavar="RUN_DIR",
                    help="build a text prior from this train-ldm run's crop embeddings")
    ap.add_argument("--prior-k", type=int, default=None, help="neighbours the prior averages")
    args = ap.parse_args()
    if args.prior_k is not None and (args.prior_k < 1 or not args.prior):
        ap.error("--prior-k needs --prior and must be at least 1")
    src, out = Path(args.bundle), Path(args.out)
    manifest = read_manifest(src)
    staging = out.parent / f".{out.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(src, staging)
    try:
        size = _assemble(args, src, staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"bundle at {out} ({size:.1f} MB)")
    return 0


def _assemble(args, src: Path, staging: Path, manifest: dict) -> float:
    """Fill `staging` (a copy of `src`) as asked; check it loads; its size in MB."""
    if args.cae:
        cae_file = staging / manifest["cae"]["file"]
        if not same_encoder(cae_file, Path(args.cae)):
            raise BundleError(f"{args.cae} has a different encoder than the bundle's CAE; the "
                              "diffusion model's latents would not match")
        shutil.copy2(args.cae, cae_file)
    if args.card:
        shutil.copy2(args.card, staging / "MODEL_CARD.md")
    m = json.loads((src / "bundle.json").read_text())
    for item in args.default:
        key, _, value = item.partition("=")
        if key not in m["defaults"]:
            raise SystemExit(f"unknown default {key!r}; the bundle has {', '.join(m['defaults'])}")
        old = m["defaults"][key]
        m["defaults"][key] = type(old)(value) if not isinstance(old, bool) else value == "true"
    if args.prior:
        from engine.training.ldm import PRIOR_FILE, build_text_prior

        run = Path(args.prior)
        marker = run / "clap" / "conditioner.id"
        cond_id = m["conditioner"].get("id") or load_bundle(staging).conditioner.id
        if not marker.exists() or marker.read_text() != cond_id:
            raise BundleError(f"{run}/clap was not made with the bundle's conditioner {cond_id}")
        build_text_prior(run / "latents", run / "clap", cond_id, args.prior_k).save(
            staging / PRIOR_FILE)
        m["prior"] = {"file": PRIOR_FILE}
    if args.name:
        m["name"] = args.name
    if args.description:
        m["description"] = args.description
    write_manifest(staging, m)
    load_bundle(staging)  # every shape checked before it replaces anything
    return sum(f.stat().st_size for f in staging.iterdir()) / 2**20


if __name__ == "__main__":
    raise SystemExit(main())
