"""The LAION-CLAP backend (optional extra `riffwright[laion]`), offline only.

What it takes care of, because `laion_clap` as shipped does not:
- the checkpoint is a pickle: its SHA-256 is checked first (a published digest always wins
  over one a bundle gives), then it is read only through PyTorch's restricted unpickler with
  an explicit allow-list (`engine.safeload`), never a full unpickle; a missing, truncated,
  tampered or unknown file is refused with a message naming it;
- the audio model must match the checkpoint: the music checkpoints use `HTSAT-base`, the 630k
  ones `HTSAT-tiny` (a wrong one fails in `load_state_dict`), and fusion is in the name;
- `import laion_clap` loads three tokenizers from the Hugging Face hub and building the model
  downloads roberta-base (~500 MB) only to overwrite it with the checkpoint. We run with
  `HF_HUB_OFFLINE=1`, check that the hub cache holds the tokenizer files first (naming the
  file that is missing), and build the RoBERTa text model from its `config.json` instead of
  the hub weights;
- the device (cpu, cuda, mps) is passed explicitly (laion_clap only auto-detects CUDA);
- audio is embedded over fixed 10 s windows, averaged (laion_clap crops long clips at
  random). laion_clap imports torchvision only for image utilities it never uses here; where
  torchvision cannot be imported, an inert stand-in is registered so the audio/text path loads.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np

from engine.errors import BundleError
from engine.models.conditioning.features import split_windows
from engine.safeload import load_weights_only
from engine.weights import sha256_file

KIND = "laion-clap"
SAMPLE_RATE = 48_000
WINDOW = 480_000

# name -> (amodel, enable_fusion, known sha256 or None)
KNOWN_CHECKPOINTS: dict[str, tuple[str, bool, str | None]] = {
    # LFS SHA-256 as listed on the hub mirror; verify against the original on first download.
    "music_audioset_epoch_15_esc_90.14.pt": (
        "HTSAT-base", False, "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd"
    ),
    "music_speech_epoch_15_esc_89.25.pt": ("HTSAT-base", False, None),
    "music_speech_audioset_epoch_15_esc_89.98.pt": ("HTSAT-base", False, None),
    "630k-best.pt": ("HTSAT-tiny", False, None),
    "630k-audioset-best.pt": ("HTSAT-tiny", False, None),
    "630k-fusion-best.pt": ("HTSAT-tiny", True, None),
    "630k-audioset-fusion-best.pt": ("HTSAT-tiny", True, None),
}

# What `import laion_clap` and the model need from the hub cache (weights are not needed).
HUB_FILES: dict[str, tuple[str, ...]] = {
    "bert-base-uncased": ("vocab.txt",),
    "roberta-base": ("vocab.json", "merges.txt", "config.json"),
    "facebook/bart-base": ("vocab.json", "merges.txt"),
}

CHECKPOINT_HELP = (
    "download it on a machine with internet from huggingface.co/lukewys/laion_clap "
    "(music: music_audioset_epoch_15_esc_90.14.pt) and pass its local path"
)


def guess_model(checkpoint: str | Path) -> tuple[str, bool]:
    """(amodel, enable_fusion) for a checkpoint file name: music_* -> HTSAT-base."""
    name = Path(checkpoint).name
    if name in KNOWN_CHECKPOINTS:
        amodel, fusion, _ = KNOWN_CHECKPOINTS[name]
        return amodel, fusion
    low = name.lower()
    return ("HTSAT-base" if low.startswith("music") else "HTSAT-tiny"), ("fusion" in low)


def hub_cache_dir(explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def _cached_file(cache: Path, repo: str, filename: str) -> Path | None:
    root = cache / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / "main"
    snapshots = []
    if ref.is_file():
        snapshots.append(root / "snapshots" / ref.read_text().strip())
    if (root / "snapshots").is_dir():
        snapshots.extend(sorted((root / "snapshots").iterdir()))
    for snap in snapshots:
        if (snap / filename).is_file():
            return snap / filename
    return None


def check_hub_cache(cache_dir: str | Path | None = None) -> Path:
    """Raise BundleError naming the first hub file LAION-CLAP needs that is not cached."""
    cache = hub_cache_dir(cache_dir)
    for repo, files in HUB_FILES.items():
        for name in files:
            if _cached_file(cache, repo, name) is None:
                wanted = " ".join(f"{r}:{','.join(f)}" for r, f in HUB_FILES.items())
                raise BundleError(
                    f"LAION-CLAP needs {repo}/{name} in the Hugging Face cache {cache}, and it "
                    f"is not there; on a machine with internet run `huggingface-cli download "
                    f"{repo} {' '.join(files)}` (all needed: {wanted}), then copy that cache "
                    "here or point HF_HUB_CACHE at it"
                )
    return cache


def verify_checkpoint(path: str | Path, expected_sha256: str | None = None) -> str:
    """Check the checkpoint exists and has the expected SHA-256; return the digest.

    For a checkpoint name with a published digest (`KNOWN_CHECKPOINTS`) that digest is always
    required; a digest given by the caller (a bundle's `sha256`) is an *additional* check
    that must agree with it, never a replacement, so a bundle cannot pass off another file
    under a published name. Other pickle checkpoints need a caller's digest. Whatever the
    digests say, the file is then read only through the restricted unpickler
    (`engine.safeload`): a digest never permits code to run.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"LAION-CLAP checkpoint not found: {path}; {CHECKPOINT_HELP}")
    size = path.stat().st_size
    if size == 0:
        raise BundleError(f"LAION-CLAP checkpoint {path} is empty (an interrupted download?)")
    if expected_sha256 is not None and not isinstance(expected_sha256, str):
        raise BundleError(f"the SHA-256 given for {path.name} is not a text value")
    known = KNOWN_CHECKPOINTS.get(path.name, (None, None, None))[2]
    given = (expected_sha256 or "").lower().strip() or None
    if known is not None and given is not None and given != known:
        raise BundleError(
            f"the SHA-256 given for {path.name} ({given[:16]}...) is not the published one "
            f"({known[:16]}...); a published checkpoint is only loaded with its published "
            "digest. Nothing was loaded"
        )
    expected = known or given
    if expected is None and path.suffix.lower() != ".safetensors":
        raise BundleError(
            f"no SHA-256 is known for {path.name}, and it is a pickle file; pass its expected "
            "SHA-256 (shown on the hub's file page) to load it"
        )
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise BundleError(
            f"LAION-CLAP checkpoint {path} ({size} bytes) has SHA-256 {digest[:16]}..., expected "
            f"{expected[:16]}...: the file is truncated, corrupted or not the checkpoint named; "
            "download it again. Nothing was loaded"
        )
    return digest


def _inert(name: str):
    def fail(*_a, **_k):
        raise RuntimeError(f"torchvision is not installed; {name} is unavailable")

    return type(name, (), {"__init__": fail, "__call__": fail})


def _stub_attr(module: str, attr: str):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _inert(f"{module}.{attr}")


def _ensure_torchvision() -> None:
    """laion_clap imports torchvision for image utilities; register a stand-in if it can't."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # absent, or a build that does not match this torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.ops", "torchvision.ops.misc"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__getattr__ = functools.partial(_stub_attr, name)  # PEP 562
        mod.__riffwright_stub__ = True
        sys.modules[name] = mod
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    sys.modules["torchvision.ops"].misc = sys.modules["torchvision.ops.misc"]


def _set_offline(cache: Path) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(cache)
    # already-imported hub code read these at import time
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
        hub.HF_HUB_CACHE = str(cache)


@contextlib.contextmanager
def _roberta_from_config(model_module):
    """Inside: `RobertaModel.from_pretrained(name)` builds the model from the cached config."""
    original = model_module.RobertaModel

    class _FromConfig:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            from transformers import RobertaConfig

            return original(RobertaConfig.from_pretrained(name), add_pooling_layer=True)

    model_module.RobertaModel = _FromConfig
    try:
        yield
    finally:
        model_module.RobertaModel = original


def _read_state_dict(path: Path):
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    ckpt = load_weights_only(path, "LAION-CLAP")  # never a full unpickle, hash or not
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise BundleError(f"{path.name} does not hold a LAION-CLAP state dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def _require_extra() -> None:
    if importlib.util.find_spec("laion_clap") is None:
        raise BundleError(
            "the LAION-CLAP backend needs the optional extra: pip install 'riffwright[laion]'"
        )


def load_laion_clap(
    checkpoint: str | Path,
    device: str = "cpu",
    expected_sha256: str | None = None,
    amodel: str | None = None,
    enable_fusion: bool | None = None,
    hub_cache: str | Path | None = None,
):
    """Build LAION-CLAP offline from a verified local checkpoint -> LaionClapConditioner."""
    path = Path(checkpoint)
    _require_extra()
    if not path.is_file():
        raise BundleError(f"LAION-CLAP checkpoint not found: {path}; {CHECKPOINT_HELP}")
    guessed_model, guessed_fusion = guess_model(path)
    amodel = amodel or guessed_model
    enable_fusion = guessed_fusion if enable_fusion is None else bool(enable_fusion)
    if amodel not in ("HTSAT-base", "HTSAT-tiny", "HTSAT-large", "PANN-14"):
        raise BundleError(f"unknown LAION-CLAP audio model {amodel!r}")
    if enable_fusion and importlib.util.find_spec("torchaudio") is None:
        raise BundleError(f"{path.name} is a fusion checkpoint, which needs torchaudio")
    cache = check_hub_cache(hub_cache)
    digest = verify_checkpoint(path, expected_sha256)
    state = _read_state_dict(path)  # before any laion_clap code: a refused file stops here
    _set_offline(cache)
    _ensure_torchvision()

    import torch

    device = str(device)
    if device.startswith("mps"):
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
        if not torch.backends.mps.is_available():
            raise BundleError("device 'mps' was asked for but this machine has no usable MPS")
    try:
        import laion_clap
        model_module = sys.modules.get("clap_module.model") or importlib.import_module(
            "laion_clap.clap_module.model"
        )
        with _roberta_from_config(model_module), contextlib.redirect_stdout(sys.stderr):
            clap = laion_clap.CLAP_Module(
                enable_fusion=enable_fusion, device=device, amodel=amodel, tmodel="roberta"
            )
    except OSError as e:  # transformers: a file not in the offline cache
        raise BundleError(f"LAION-CLAP could not load from the hub cache {cache}: {e}") from None
    own = clap.model.state_dict()
    if "text_branch.embeddings.position_ids" not in own:
        state.pop("text_branch.embeddings.position_ids", None)
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    if bad or missing:
        first = bad[0] if bad else missing[0]
        raise BundleError(
            f"{path.name} does not fit LAION-CLAP {amodel} (fusion={enable_fusion}): "
            f"{len(bad)} tensor(s) of another shape, {len(missing)} missing, e.g. {first}; "
            "pass amodel='HTSAT-base' for the music checkpoints, 'HTSAT-tiny' for the 630k ones"
        )
    clap.model.load_state_dict(state, strict=False)
    clap.eval()
    config = {
        "checkpoint": path.name, "amodel": amodel, "enable_fusion": enable_fusion,
        "sha256": digest,
    }
    return LaionClapConditioner(clap, config, device)


def _quantise(x: np.ndarray) -> np.ndarray:
    """laion_clap's float -> int16 -> float round trip, which its models were trained with."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0


class LaionClapConditioner:
    """`Conditioner` over a loaded `laion_clap.CLAP_Module` (512-d)."""

    kind = KIND
    dim = 512
    sample_rate = SAMPLE_RATE

    def __init__(self, clap, config: dict, device: str) -> None:
        self.module = clap
        self.config = dict(config)
        self.device = device
        self.checksum = config["sha256"]
        self.id = f"laion-clap-{config['amodel']}-{config['sha256'][:16]}"

    def eval(self):
        self.module.eval()
        return self

    def embed_text(self, texts: list[str]):
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros(0, self.dim)
        with torch.inference_mode():
            emb = self.module.get_text_embedding(list(texts), use_tensor=True)
            return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()

    def embed_audio(self, wave, sample_rate: int, batch_windows: int = 4):
        import torch

        from engine.models.conditioning.builtin import prepare_audio

        out = []
        with torch.inference_mode():
            for row in prepare_audio(wave, sample_rate, SAMPLE_RATE):
                windows = split_windows(row, WINDOW).numpy()
                windows = torch.from_numpy(_quantise(windows))
                embs = []
                for i in range(0, windows.shape[0], batch_windows):
                    chunk = windows[i : i + batch_windows].to(self.device)
                    embs.append(
                        self.module.get_audio_embedding_from_data(chunk, use_tensor=True)
                        .float().cpu()
                    )
                out.append(torch.nn.functional.normalize(torch.cat(embs).mean(0), dim=-1))
        return torch.stack(out) if out else torch.zeros(0, self.dim)
