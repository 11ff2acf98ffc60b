"""Reading foreign PyTorch checkpoints without ever unpickling code.

LAION-CLAP and Music2Latent publish `.pt` files, which are pickles: an ordinary
`torch.load` of one runs whatever the file asks for. Riffwright only ever reads them with
`torch.load(weights_only=True)`, PyTorch's restricted unpickler, which rebuilds tensors and
plain containers and refuses every other class or function. Published checkpoints also hold
a few NumPy values (an epoch counter or a metric saved as a NumPy scalar), so the classes
that rebuild NumPy scalars, arrays and dtypes are allowed by name, and nothing else.
There is no fallback: a file that needs more is refused with a message naming the class.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import BundleError


def _allowed_globals() -> list:
    """NumPy scalar/array/dtype rebuilders, under both NumPy 1 and NumPy 2 module names.

    `torch.serialization.safe_globals` takes `(object, "qualified.name")` pairs, so a file
    written with NumPy 1 (`numpy.core...`) reads under NumPy 2 (`numpy._core...`) without
    importing the deprecated module path.
    """
    import _codecs

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    allowed: list = [np.ndarray, np.dtype, _codecs.encode]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray.scalar, f"{mod}.scalar"))
        allowed.append((multiarray._reconstruct, f"{mod}._reconstruct"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _refusal(e: BaseException) -> str:
    """What the restricted unpickler refused, in a few words (not torch's advice on how to
    allow it, which a musician must not follow for a file from someone else)."""
    text = str(e)
    m = re.search(r"(?:unsupported global|unsupported class|call reduce for)[:\s]*"
                  r"(?:GLOBAL\s+)?([\w.]+)", text, re.IGNORECASE)
    if m:
        return f"it asks for {m.group(1)}"
    if "WeightsUnpickler error:" in text:
        first = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
        return first[0][:120] if first and first[0] else "not weights"
    if "weights_only" in text:
        return "it holds more than weights"
    return (text.strip().splitlines() or [type(e).__name__])[0][:120]


def load_weights_only(path: str | Path, what: str):
    """`torch.load` of a foreign checkpoint through the restricted unpickler only.

    Raises `BundleError` naming the file and what it asked for when the file holds anything
    but tensors, plain containers and NumPy values; the file's code never runs.
    """
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except OSError as e:
        raise BundleError(f"cannot read {what} checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - any refusal or malformed pickle: not plain weights
        hint = _refusal(e)
        raise BundleError(
            f"{path.name} is not a plain-weights {what} checkpoint and was not loaded "
            f"({hint}); Riffwright never unpickles code from a checkpoint"
        ) from None
