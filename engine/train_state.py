"""Resumable training state: models, EMA, optimiser and counters in safetensors + JSON.

No pickles, even for our own checkpoints: tensors go to `<name>.step-<N>.safetensors`
(prefixed by role: `model.`, `ema.`, `opt.<param index>.`; the step is also in the file's
metadata), everything else to `<name>.json`, which names the weights file and its step.
A checkpoint is one unit: the weights are written first under a new name, the JSON last
(atomically) commits them, and only then is the checkpoint before the previous one removed.
A kill at any moment leaves a JSON whose weights file exists and matches its step; should
they ever disagree (a copied or hand-edited folder), `load_state` falls back to the previous
complete checkpoint (`<name>.prev.json`) or raises a `RiffwrightError` saying so.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from engine import weights as weight_files  # looked up per call: tests stand in a dying writer
from engine.errors import RiffwrightError


def state_paths(out: Path, name: str = "train_state") -> tuple[Path, Path]:
    """(the legacy single weights file, the state JSON)."""
    return Path(out) / f"{name}.safetensors", Path(out) / f"{name}.json"


def _weights_name(name: str, step: int) -> str:
    return f"{name}.step-{int(step)}.safetensors"


def _prev_json(out: Path, name: str) -> Path:
    return Path(out) / f"{name}.prev.json"


def has_state(out: Path, name: str = "train_state") -> bool:
    """A checkpoint to resume from exists (its JSON and at least one weights file)."""
    legacy, jpath = state_paths(out, name)
    return jpath.exists() and (legacy.exists()
                               or any(Path(out).glob(f"{name}.step-*.safetensors")))


def save_state(out: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
               meta: dict, name: str = "train_state") -> None:
    from safetensors.torch import save

    out = Path(out)
    step = int(meta.get("step", 0))
    tensors = {}
    for role, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{role}.{k}"] = v.detach().cpu().contiguous()
    opt_state = opt.state_dict()
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    legacy, jpath = state_paths(out, name)
    weights = _weights_name(name, step)
    weight_files.atomic_write_bytes(out / weights, save(tensors, metadata={"step": str(step)}))
    previous = jpath.read_bytes() if jpath.exists() else None
    if previous is not None:
        weight_files.atomic_write_bytes(_prev_json(out, name), previous)
    full = {**meta, "step": step, "weights": weights, "param_groups": opt_state["param_groups"]}
    weight_files.atomic_write_bytes(jpath, (json.dumps(full, indent=1) + "\n").encode())  # the commit
    keep = {weights, _named_weights(previous)}
    for f in out.glob(f"{name}.step-*.safetensors"):
        if f.name not in keep:
            with contextlib.suppress(OSError):
                f.unlink()
    if legacy.exists() and legacy.name not in keep:
        with contextlib.suppress(OSError):
            legacy.unlink()


def _named_weights(raw: bytes | None) -> str | None:
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        return None
    return meta.get("weights") if isinstance(meta, dict) else None


def _checked(out: Path, jpath: Path, name: str) -> tuple[dict, dict]:
    """(meta, tensors) of one checkpoint whose weights file exists and matches its step;
    raises RiffwrightError naming what disagrees."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        meta = json.loads(jpath.read_text())
    except (OSError, ValueError) as e:
        raise RiffwrightError(f"cannot read {jpath}: {e}") from None
    if not isinstance(meta, dict) or "param_groups" not in meta:
        raise RiffwrightError(f"{jpath} is not a training state")
    weights = meta.get("weights")
    if weights is None:  # written before checkpoints named their weights
        tpath = state_paths(out, name)[0]
    elif not isinstance(weights, str) or Path(weights).name != weights:
        raise RiffwrightError(f"{jpath} names an invalid weights file")
    else:
        tpath = out / weights
    if not tpath.is_file():
        raise RiffwrightError(f"{jpath} (step {meta.get('step')}) names {tpath.name}, which is "
                              "missing")
    if weights is not None:
        with safe_open(str(tpath), "pt") as f:
            saved = (f.metadata() or {}).get("step")
        if saved != str(meta.get("step")):
            raise RiffwrightError(f"{tpath.name} holds step {saved}, but {jpath.name} is at "
                                  f"step {meta.get('step')}")
    return meta, load_file(str(tpath))


def load_state(out: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
               name: str = "train_state") -> dict:
    """Restore modules and optimiser in place from the newest complete checkpoint; return
    its metadata. A checkpoint whose weights are missing or from another step is skipped for
    the previous one; when none is complete, a `RiffwrightError` says why."""
    out = Path(out)
    jpath = state_paths(out, name)[1]
    try:
        meta, tensors = _checked(out, jpath, name)
    except RiffwrightError as newest:
        prev = _prev_json(out, name)
        if not prev.exists():
            raise RiffwrightError(f"the checkpoint in {out} is incomplete ({newest}); "
                                  "start a new run or restore the folder") from None
        try:
            meta, tensors = _checked(out, prev, name)
        except RiffwrightError as older:
            raise RiffwrightError(f"no complete checkpoint in {out}: {newest}; the previous "
                                  f"one: {older}") from None
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
