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
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
        hint = detail[0][:160] if detail else type(e).__name__
        raise BundleError(
            f"{path.name} is not a plain-weights {what} checkpoint and was not loaded "
            f"({hint}); Riffwright never unpickles code from a checkpoint"
        ) from None
