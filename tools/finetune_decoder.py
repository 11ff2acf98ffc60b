"""Keep training a CAE's consistency decoder with its encoder frozen.

Used to build the default bundle on a CPU budget: the diffusion model is trained on the
latents of a fixed encoder snapshot while the decoder keeps improving for that same encoder,
so the two stay compatible. Resumable (safetensors + JSON state in OUT).

    python tools/finetune_decoder.py CAE.safetensors DATA_DIR OUT_DIR [--steps N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from engine.models.cae import KIND, cae_from_config, load_cae
from engine.train_state import has_state, load_state, save_state, stop_on_sigterm
from engine.training.cae import (
    CropSampler,
    CTSchedule,
    _list_sources,
    family_balanced_stems,
    train_step,
)
from engine.weights import save_module


def with_head(cae, head_channels: int):
    """`cae` with a decoder output head of `head_channels` units (Decoder's docstring), its
    other weights unchanged; `cae` itself when it has that head already or none is asked."""
    have = int(cae.config.get("head_channels", 0))
    if not head_channels or have == head_channels:
        return cae
    if have:
        raise SystemExit(f"{cae.id} already has a head of {have} units, not {head_channels}")
    wider = cae_from_config({**cae.config, "head_channels": head_channels})
    missing, unexpected = wider.load_state_dict(cae.state_dict(), strict=False)
    if unexpected or any(not k.startswith("decoder.head.") for k in missing):
        raise SystemExit(f"cannot add a head to {cae.id}: {missing} {unexpected}")
    return wider


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cae")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop-frames", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--stage-steps", type=int, default=400)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--spectral-weight", type=float, default=0.0,
                    help="weight of the multi-resolution STFT loss on the one-step decode")
    ap.add_argument("--mel-weight", type=float, default=0.0,
                    help="weight of the log-mel distance on the one-step decode")
    ap.add_argument("--head-channels", type=int, default=0,
                    help="give the decoder a wider output head of this many units (starts at "
                         "zero, so the decoder first sounds as before); 0 keeps its layout")
    ap.add_argument("--mix-prob", type=float, default=0.5,
                    help="share of crops that mix several stems of a song")
    ap.add_argument("--balance-families", action="store_true",
                    help="draw single stems, every instrument family equally often")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cae = with_head(load_cae(args.cae), args.head_channels).train()
    ema = with_head(load_cae(args.cae), args.head_channels).eval()
    cae.encoder.requires_grad_(False)
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(cae.decoder.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step = 0
    if has_state(out):
        step = int(load_state(out, {"model": cae, "ema": ema}, opt)["step"])
        for g in opt.param_groups:  # a resumed run takes the learning rate it is given now
            g["lr"] = args.lr
    sched = CTSchedule(stage_steps=args.stage_steps, spectral_weight=args.spectral_weight,
                       mel_weight=args.mel_weight)
    groups, weights = (family_balanced_stems(args.data, "train") if args.balance_families
                       else (_list_sources(args.data, "train"), None))
    sampler = CropSampler(groups, args.crop_frames * cae.hop, cae.sample_rate,
                          mix_prob=args.mix_prob, seed=step, weights=weights)
    gen = torch.Generator().manual_seed(1000 + step)
    t0, first = time.time(), step

    def checkpoint():
        save_state(out, {"model": cae, "ema": ema}, opt, {"step": step})
        # the encoder is frozen: copy it exactly into the EMA before exporting
        ema.encoder.load_state_dict(cae.encoder.state_dict())
        ema.reset_id()
        save_module(ema, out / "cae.safetensors", KIND, ema.config, torch.float16)

    restore = stop_on_sigterm()  # `kill PID` checkpoints like Ctrl-C
    saved = step
    try:
        with open(out / "train.log", "a") as log:
            while step < args.steps:
                wave = sampler.batch(args.batch_size)
                with torch.no_grad():
                    spec = cae.spectral(wave)
                stats = train_step(cae, opt, spec, step, sched, ema, 0.998, 1.0, gen)
                cae.encoder.eval()
                step += 1
                if step % 10 == 0:
                    rate = (step - first) / (time.time() - t0)
                    log.write(json.dumps({"step": step, **stats, "steps_per_s": rate}) + "\n")
                    log.flush()
                if step % args.checkpoint_every == 0 or step == args.steps:
                    checkpoint()
                    saved = step
    except KeyboardInterrupt:
        if step > saved:
            checkpoint()
        return 130
    finally:
        restore()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
