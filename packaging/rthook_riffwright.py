"""PyInstaller runtime hook: runs before the app's first import, hence before torch loads.

PYTORCH_ENABLE_MPS_FALLBACK must be in the environment before `import torch` on Apple GPUs
(ops MPS lacks then run on the CPU instead of raising). A value the user set is kept.
"""

import os

os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
