"""What every trainer's loop does the same way: the linear learning-rate warm-up, the EMA
update, "every N steps and at the last one", and the JSON-lines training log.

Light on purpose (torch is imported by the one function that needs it): the encoder
trainer's module is imported by the command line before any training starts.
"""

from __future__ import annotations

import json
from pathlib import Path


def set_lr(opt, lr: float) -> None:
    """Give every parameter group of `opt` the learning rate `lr`."""
    for g in opt.param_groups:
        g["lr"] = lr


def warmup_lr(lr: float, step: int, warmup: int) -> float:
    """`lr` ramped up linearly over the first `warmup` steps (step 0 is the first)."""
    return lr * min(1.0, (step + 1) / max(warmup, 1))


def ema_update(ema, model, max_decay: float, step: int) -> None:
    """Move `ema`'s weights towards `model`'s. The decay starts low (early in a run the
    average follows the weights quickly) and rises to `max_decay`."""
    import torch

    decay = min(max_decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1.0 - decay)


def due(step: int, every: int, last: int) -> bool:
    """Whether periodic work (a log line, a checkpoint) falls on `step`: every `every`
    steps, and always at the `last` one."""
    return step % every == 0 or step == last


def log_json(path: Path, record: dict) -> None:
    """Append one record to a JSON-lines log (one line per record; a crash loses none of
    the lines before it)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
