"""Resumable training state: models, EMA, optimiser and counters in safetensors + JSON.

No pickles, even for our own checkpoints: tensors go to `<name>.safetensors` (prefixed by
role: `model.`, `ema.`, `opt.<param index>.`), everything else to `<name>.json`. Both are
written atomically, the JSON last, so an interrupted save leaves the previous state loadable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def state_paths(out: Path, name: str = "train_state") -> tuple[Path, Path]:
    return Path(out) / f"{name}.safetensors", Path(out) / f"{name}.json"


def has_state(out: Path, name: str = "train_state") -> bool:
    return all(p.exists() for p in state_paths(out, name))


def save_state(out: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
               meta: dict, name: str = "train_state") -> None:
    from safetensors.torch import save

    from engine.weights import atomic_write_bytes

    tensors = {}
    for role, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{role}.{k}"] = v.detach().cpu().contiguous()
    opt_state = opt.state_dict()
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tpath, jpath = state_paths(out, name)
    atomic_write_bytes(tpath, save(tensors))
    full = {**meta, "param_groups": opt_state["param_groups"]}
    atomic_write_bytes(jpath, (json.dumps(full, indent=1) + "\n").encode())


def load_state(out: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
               name: str = "train_state") -> dict:
    """Restore modules and optimiser in place; return the saved metadata."""
    from safetensors.torch import load_file

    tpath, jpath = state_paths(out, name)
    meta = json.loads(jpath.read_text())
    tensors = load_file(str(tpath))
    for role, module in modules.items():
        pre = f"{role}."
        module.load_state_dict({k[len(pre):]: v for k, v in tensors.items()
                                if k.startswith(pre)})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def stop_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt (so `kill PID` checkpoints before exiting);
    returns a function that restores the previous handler. No-op off the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)
