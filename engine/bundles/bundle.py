"""Model bundles: a folder with `bundle.json` and safetensors weights.

```
my-bundle/
  bundle.json            format, sample rate, latent spec and statistics, σd, conditioner,
                         window, default parameters
  cae.safetensors        the consistency autoencoder (config in the file's metadata)
  conditioner.safetensors  the built-in text/audio encoder (or a reference to a LAION-CLAP
                         checkpoint with its SHA-256)
  ldm.safetensors        the diffusion U-Net
  prior.safetensors      optional: the text prior, audio embeddings of the training stems
                         that text prompts are mapped onto (engine.models.conditioning.prior)
  harmony_probe.safetensors  optional: a probe that reads the low register's pitch classes
                         (and whether a stem is drums) off latents, for harmony guidance
  rhythm_probe.safetensors   optional: a probe that reads a stem's onsets off latents, for
                         rhythm guidance (both: engine.models.probe)
  MODEL_CARD.md          optional: data, training, figures, limits
```

Search order for the bundle to use: an explicit path (`--model`), `RIFFWRIGHT_MODEL`, the
user data dir (`<user_data_dir>/models/default`, or the only bundle there), the default bundle
shipped in `resources/models/default`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.diffusion.context_features import (
    BeatGrid,
    bass_features,
    context_features,
    feature_layout,
    grid_features,
)
from engine.errors import BundleError
from engine.fsutil import atomic_write_bytes, read_json_object
from engine.models.cae import create_cae, latent_stats, load_cae
from engine.models.conditioning import (
    check_conditioner_matches,
    create_conditioner,
    load_conditioner,
    load_laion_clap,
)
from engine.models.conditioning.prior import load_prior
from engine.params import bundle_default_values, check_bundle_defaults
from engine.weights import load_into, read_checkpoint, save_module, sha256_file

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
OPTIONAL_SECTIONS = ("prior", "harmony_probe", "rhythm_probe")  # optional files, each a section {"file": name}
# what a new bundle's `defaults` hold: every parameter a bundle may set (engine.params)
DEFAULT_PARAMETERS = bundle_default_values()


def resources_dir() -> Path:
    """`resources/` in a source checkout, or inside a frozen (PyInstaller) app."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"  # engine/bundles/bundle.py


def default_bundle_dir() -> Path:
    return resources_dir() / "models" / "default"


def user_models_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("riffwright", appauthor=False)) / "models"


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def find_bundle(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve which bundle to use (see the module docstring for the order)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not is_bundle(p):
            raise BundleError(f"{p} is not a model bundle (no {MANIFEST} in it)")
        return p
    env = os.environ.get("RIFFWRIGHT_MODEL")
    if env:
        p = Path(env).expanduser()
        if not is_bundle(p):
            raise BundleError(f"RIFFWRIGHT_MODEL={env} is not a model bundle (no {MANIFEST})")
        return p
    user = user_models_dir()
    if is_bundle(user / "default"):
        return user / "default"
    found = [p for p in sorted(user.glob("*")) if is_bundle(p)] if user.is_dir() else []
    if len(found) == 1:
        return found[0]
    if is_bundle(default_bundle_dir()):
        return default_bundle_dir()
    raise BundleError(
        "no model bundle found: pass --model DIR, set RIFFWRIGHT_MODEL, or create one with "
        "`riffwright models init --arch tiny --out DIR`"
    )


def list_bundles() -> list[dict]:
    """Every bundle Riffwright can see, with where it was found."""
    seen: list[dict] = []
    candidates: list[tuple[str, Path]] = []
    env = os.environ.get("RIFFWRIGHT_MODEL")
    if env:
        candidates.append(("RIFFWRIGHT_MODEL", Path(env).expanduser()))
    user = user_models_dir()
    if user.is_dir():
        candidates += [("user", p) for p in sorted(user.iterdir())]
    candidates.append(("built-in", default_bundle_dir()))
    for origin, p in candidates:
        if is_bundle(p):
            try:
                m = read_manifest(p)
                seen.append({"path": str(p), "origin": origin, "name": m.get("name", p.name),
                             "arch": m["ldm"].get("arch"), "sample_rate": m["sample_rate"]})
            except BundleError as e:
                seen.append({"path": str(p), "origin": origin, "error": str(e)})
    return seen


def _require(d: dict, key: str, kind: type | tuple, where: str) -> Any:
    if key not in d:
        raise BundleError(f"{where}: missing field '{key}'")
    if not isinstance(d[key], kind):
        raise BundleError(f"{where}: field '{key}' has the wrong type")
    return d[key]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _inside_name(value: Any, where: str, key: str) -> str:
    """A file named by the manifest: a relative path that stays inside the bundle folder."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise BundleError(f"{where}: field '{key}' is not a file name")
    p = Path(value)
    if p.is_absolute() or value.startswith("~") or ".." in p.parts:
        raise BundleError(f"{where}: {key} {value[:80]!r} points outside the bundle folder; "
                          "a bundle's own files must be inside it")
    return value


def _check_sections(m: dict, where: str) -> None:
    """Types of everything `load_bundle` reads from the cae/conditioner/ldm/prior sections."""
    cae, cond = m["cae"], m["conditioner"]
    if cae.get("backend", "riffwright") == "music2latent":
        _require(cae, "checkpoint", str, where + " cae")
    else:
        _inside_name(cae.get("file"), where + " cae", "file")
    kind = cond.get("kind", "builtin")
    if kind not in ("builtin", "laion-clap"):
        raise BundleError(f"{where}: conditioner kind {str(kind)[:40]!r} is not builtin or "
                          "laion-clap")
    if kind == "laion-clap":
        ck = _require(cond, "checkpoint", str, where + " conditioner")
        if not Path(ck).expanduser().is_absolute():
            _inside_name(ck, where + " conditioner", "checkpoint")
    else:
        _inside_name(cond.get("file"), where + " conditioner", "file")
    for key in ("sha256", "amodel", "id"):
        if cond.get(key) is not None and not isinstance(cond[key], str):
            raise BundleError(f"{where} conditioner: field '{key}' has the wrong type")
    ck = cae.get("checkpoint")
    if isinstance(ck, str) and not Path(ck).expanduser().is_absolute():
        _inside_name(ck, where + " cae", "checkpoint")
    _inside_name(m["ldm"]["file"], where + " ldm", "file")
    for section in OPTIONAL_SECTIONS:
        if section in m:
            _inside_name(m[section]["file"], f"{where} {section}", "file")


def _check_format(m: dict, where: str) -> None:
    """A format this version reads, a sample rate in range."""
    fmt = _require(m, "format", int, where)
    if fmt > FORMAT_VERSION:
        raise BundleError(f"{where}: format {fmt} is newer than this Riffwright understands "
                          f"({FORMAT_VERSION}); update Riffwright")
    sr = _require(m, "sample_rate", int, where)
    if not 1000 <= sr <= 768_000:
        raise BundleError(f"{where}: sample rate {sr} is out of range")


def _check_latent(m: dict, where: str) -> None:
    """The latent's size and hop, and its per-channel mean and (positive) std."""
    lat = _require(m, "latent", dict, where)
    dim = _require(lat, "dim", int, where + " latent")
    hop = _require(lat, "hop", int, where + " latent")
    if not (0 < dim <= 4096 and 0 < hop <= 1 << 20):
        raise BundleError(f"{where}: latent dim/hop out of range")
    for k in ("mean", "std"):
        v = _require(lat, k, list, where + " latent")
        if len(v) != dim:
            raise BundleError(f"{where}: latent {k} has {len(v)} values for {dim} channels")
        if not all(_is_number(x) for x in v):
            raise BundleError(f"{where}: latent {k} must hold numbers")
    if any(s <= 0 for s in lat["std"]):
        raise BundleError(f"{where}: latent std must be positive")


def _check_section_types(m: dict, where: str) -> None:
    """The model sections are objects, and the ldm and the optional sections name their
    files."""
    for section in ("cae", "conditioner", "ldm"):
        _require(m, section, dict, where)
    _require(m["ldm"], "file", str, where + " ldm")
    for section in OPTIONAL_SECTIONS:
        if section in m:
            _require(m, section, dict, where)
            _require(m[section], "file", str, f"{where} {section}")


def _check_sampling(m: dict, where: str) -> None:
    """The name, sigma_data and the inference windows (filled in where left out)."""
    if m.get("name") is not None and not isinstance(m["name"], str):
        raise BundleError(f"{where}: field 'name' has the wrong type")
    m.setdefault("sigma_data", 1.0)
    m.setdefault("window_frames", 128)
    m.setdefault("overlap_frames", 32)
    if not _is_number(m["sigma_data"]) or m["sigma_data"] <= 0:
        raise BundleError(f"{where}: sigma_data must be a positive number")
    for k in ("window_frames", "overlap_frames"):
        if not isinstance(m[k], int) or isinstance(m[k], bool) or not 0 <= m[k] <= 1 << 16:
            raise BundleError(f"{where}: {k} must be a whole number")
    if m["window_frames"] < 1 or m["overlap_frames"] >= m["window_frames"]:
        raise BundleError(f"{where}: overlap_frames must be below window_frames")


def _check_defaults(m: dict, where: str) -> None:
    """The bundle's parameter defaults, checked against the table and completed by it."""
    defaults = m.get("defaults", {})
    if not isinstance(defaults, dict):
        raise BundleError(f"{where}: field 'defaults' has the wrong type")
    problem = check_bundle_defaults(defaults)
    if problem is not None:
        raise BundleError(f"{where}: {problem}")
    m["defaults"] = {**DEFAULT_PARAMETERS, **defaults}


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and validate `bundle.json`; name exactly what is wrong.

    Every field `load_bundle` uses is type-checked here, and every file the bundle holds
    must be named by a relative path inside the folder; only the LAION-CLAP / Music2Latent
    checkpoints, which are never shipped in a bundle, may be absolute paths (explicit,
    read-only external references, read through the restricted unpickler only).
    """
    path = Path(path)
    f = path / MANIFEST
    if not f.is_file():
        raise BundleError(f"{path} is not a model bundle (no {MANIFEST})")
    m = read_json_object(f, BundleError)
    where = str(f)
    for check in (_check_format, _check_latent, _check_section_types, _check_sections,
                  _check_sampling, _check_defaults):
        check(m, where)
    return m


def external_checkpoints(path: str | os.PathLike, manifest: dict) -> list[Path]:
    """Weights a bundle references outside its own files (a LAION-CLAP or Music2Latent
    checkpoint): part of the model, so part of its hash."""
    root = Path(path)
    out = []
    for section in ("cae", "conditioner"):
        ck = manifest.get(section, {}).get("checkpoint")
        if isinstance(ck, str) and ck:
            p = Path(ck).expanduser()
            out.append(p if p.is_absolute() else root / p)
    return out


def bundle_hash(path: str | os.PathLike, digests: dict[str, str] | None = None) -> str:
    """SHA-256 over the manifest, every weights file in the bundle and every checkpoint it
    references outside itself: the model's identity in provenance. `digests` (resolved
    path -> SHA-256) spares re-reading a checkpoint the loader has just hashed."""
    path = Path(path)
    raw = (path / MANIFEST).read_bytes()
    h = hashlib.sha256(raw)
    own = sorted(path.glob("*.safetensors"))
    for f in own:
        h.update(f.name.encode())
        h.update(bytes.fromhex(sha256_file(f)))
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):
        manifest = {}
    seen = {f.resolve() for f in own}
    for f in external_checkpoints(path, manifest if isinstance(manifest, dict) else {}):
        if not f.is_file() or f.resolve() in seen:
            continue
        digest = (digests or {}).get(str(f.resolve())) or sha256_file(f)
        h.update(b"external:" + f.name.encode())
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


@dataclass
class Bundle:
    """A loaded model: the CAE, the conditioner, the diffusion model and their settings."""

    path: Path
    manifest: dict
    cae: Any
    conditioner: Any
    precond: Any  # engine.diffusion.edm.EDMPrecond around the U-Net
    device: Any
    hash: str
    latent_mean: Any = field(repr=False)  # (1, C, 1) tensors on the device
    latent_std: Any = field(repr=False)
    prior: Any = field(default=None, repr=False)  # engine.models.conditioning.prior.TextPrior
    harmony_probe: Any = field(default=None, repr=False)  # engine.models.probe.FeatureProbe
    rhythm_probe: Any = field(default=None, repr=False)  # engine.models.probe.FeatureProbe

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def sample_rate(self) -> int:
        return self.manifest["sample_rate"]

    @property
    def hop(self) -> int:
        return self.manifest["latent"]["hop"]

    @property
    def defaults(self) -> dict:
        return self.manifest["defaults"]

    @property
    def feature_dim(self) -> int:
        """Channels of explicit context features the diffusion model takes (0: none)."""
        return int(getattr(self.precond.net.config, "feature_dim", 0))

    @property
    def takes_beat_grid(self) -> bool:
        """Whether the diffusion model takes a beat grid after the context's chroma and
        onsets (`engine.diffusion.context_features.grid_features`)."""
        return feature_layout(self.feature_dim)[0]

    @property
    def takes_bass_chroma(self) -> bool:
        """Whether it also takes the context's low-register chroma after the grid
        (`engine.diffusion.context_features.bass_features`)."""
        return feature_layout(self.feature_dim)[1]

    @property
    def steers(self) -> dict[str, bool]:
        """Which sampling-time guidance the bundle can run: harmony needs the harmony probe,
        rhythm that (it tells drums apart) and the rhythm probe."""
        harmony = self.harmony_probe is not None
        return {"harmony": harmony, "rhythm": harmony and self.rhythm_probe is not None}

    def context_condition(self, latents, mono, grid: BeatGrid | None = None):
        """The diffusion model's context input: normalised latents (1, C, F) of the context,
        with the features of its mono model-rate audio appended when the model takes them,
        the beat grid's (zeros for None) when it takes one, then the low register's."""
        if not self.feature_dim:
            return latents
        import torch

        n = latents.shape[-1]
        f = context_features(mono, self.sample_rate, self.hop, n)
        if self.takes_beat_grid:
            f = np.concatenate([f, grid_features(grid, n, self.hop, self.sample_rate)])
        if self.takes_bass_chroma:
            f = np.concatenate([f, bass_features(mono, self.sample_rate, self.hop, n)])
        return torch.cat([latents, torch.from_numpy(f)[None].to(latents)], dim=1)

    def embed_prompt(self, text: str, prior: bool = True):
        """(1, D) float32 embedding of a text prompt, mapped through the text prior when the
        bundle has one and `prior` is true."""
        import torch

        with torch.inference_mode():
            e = self.conditioner.embed_text([text]).to(torch.float32)
            return self.prior(e) if prior and self.prior is not None else e

    def normalize(self, latents):
        return (latents - self.latent_mean) / self.latent_std

    def denormalize(self, z):
        return z * self.latent_std + self.latent_mean


def _load_cae(spec: dict, root: Path, device):
    if spec.get("backend") == "music2latent":
        # the user's own Music2Latent checkpoint (CC BY-NC), never shipped in a bundle
        ckpt = Path(_require(spec, "checkpoint", str, "bundle.json cae")).expanduser()
        return load_cae(ckpt if ckpt.is_absolute() else root / ckpt, device=device)
    return load_cae(root / _require(spec, "file", str, "bundle.json cae"), device=device)


def _load_conditioner(spec: dict, root: Path, device):
    kind = spec.get("kind", "builtin")
    if kind == "laion-clap":
        ckpt = Path(_require(spec, "checkpoint", str, "bundle.json conditioner")).expanduser()
        if not ckpt.is_absolute():
            ckpt = root / ckpt
        cond = load_laion_clap(ckpt, device, expected_sha256=spec.get("sha256"),
                               amodel=spec.get("amodel"))
    else:
        cond = load_conditioner(root / _require(spec, "file", str, "bundle.json conditioner"),
                                device=device)
    if spec.get("id"):
        check_conditioner_matches(cond, spec["id"])
    return cond


def _load_prior(spec: dict | None, root: Path, conditioner, device):
    if spec is None:
        return None

    prior = load_prior(root / spec["file"], device)  # read_manifest checked the section
    if prior.conditioner_id != conditioner.id:
        raise BundleError(f"{root}: the text prior was built with conditioner "
                          f"{prior.conditioner_id}, the bundle's is {conditioner.id}")
    if prior.dim != conditioner.dim:
        raise BundleError(f"{root}: the text prior holds {prior.dim}-d embeddings, the "
                          f"conditioner gives {conditioner.dim}-d")
    return prior


def _load_probes(m: dict, root: Path, device, feature_dim: int) -> tuple:
    """(harmony probe, rhythm probe), each None where the bundle has none; a default that
    needs a missing probe is an error. Rhythm guidance needs both (the harmony probe says
    what is a drum part); both read the context features, so the diffusion model must take
    them (`feature_dim` > 0)."""
    from engine.models.probe import ONSET_ROWS_END, load_probe

    dim = m["latent"]["dim"]
    if feature_dim == 0 and any(k in m for k in ("harmony_probe", "rhythm_probe")):
        raise BundleError(f"{root}: guidance probes need a diffusion model that takes the "
                          "context's features, and this one does not")
    harmony = rhythm = None
    if "harmony_probe" in m:
        harmony = load_probe(root / m["harmony_probe"]["file"], dim, device)
    if "rhythm_probe" in m:
        rhythm = load_probe(root / m["rhythm_probe"]["file"], dim, device, ONSET_ROWS_END)
    if harmony is None and float(m["defaults"].get("harmony", 0.0)) > 0:
        raise BundleError(f"{root}: the default harmony guidance needs a harmony probe, and "
                          "the bundle has none")
    if (harmony is None or rhythm is None) and float(m["defaults"].get("rhythm", 0.0)) > 0:
        raise BundleError(f"{root}: the default rhythm guidance needs a harmony and a rhythm "
                          "probe, and the bundle lacks one")
    return harmony, rhythm


def load_bundle(path: str | os.PathLike | None = None, device: Any = "cpu") -> Bundle:
    """Load a bundle onto `device`, checking every shape against its config.

    A bundle is someone else's file: whatever it holds, the result is a loaded model or a
    `BundleError` with one line, never another exception.
    """
    root = find_bundle(path)
    try:
        return _load_bundle(root, device)
    except BundleError:
        raise
    except OSError as e:
        raise BundleError(f"cannot read the bundle {root}: {e.strerror or e}"
                          f"{f' ({e.filename})' if e.filename else ''}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RuntimeError) as e:
        if "out of memory" in str(e).lower():
            raise
        text = " ".join(str(e).split())[:200]
        raise BundleError(f"the bundle {root} is damaged or does not fit together "
                          f"({type(e).__name__}: {text})") from None


def _load_bundle(root: Path, device: Any) -> Bundle:
    import torch

    from engine.diffusion.edm import EDMPrecond
    from engine.models.unet import UNet1d, UNetConfig

    m = read_manifest(root)
    device = torch.device(device)
    cae = _load_cae(m["cae"], root, device)
    lat = m["latent"]
    if (cae.latent_dim, cae.hop) != (lat["dim"], lat["hop"]):
        raise BundleError(f"{root}: the CAE makes {cae.latent_dim}x{cae.hop} latents but the "
                          f"bundle declares {lat['dim']}x{lat['hop']}")
    if cae.sample_rate != m["sample_rate"]:
        raise BundleError(f"{root}: the CAE runs at {cae.sample_rate} Hz, the bundle says "
                          f"{m['sample_rate']} Hz")
    conditioner = _load_conditioner(m["conditioner"], root, device)
    tensors, _, config = read_checkpoint(root / m["ldm"]["file"], expected_kind=UNet1d.kind)
    ucfg = UNetConfig.from_dict(config)
    if ucfg.latent_dim != lat["dim"]:
        raise BundleError(f"{root}: the diffusion model expects {ucfg.latent_dim}-channel "
                          f"latents, the CAE makes {lat['dim']}")
    if ucfg.clap_dim != conditioner.dim:
        raise BundleError(f"{root}: the diffusion model expects {ucfg.clap_dim}-d embeddings, "
                          f"the conditioner gives {conditioner.dim}-d")
    try:
        feature_layout(ucfg.feature_dim)
    except ValueError as e:
        raise BundleError(f"{root}: the diffusion model's {e}") from None
    net = UNet1d(ucfg)
    load_into(net, tensors, f"{root.name}/{m['ldm']['file']}")
    precond = EDMPrecond(net, sigma_data=float(m["sigma_data"])).to(device).eval()
    mean = torch.tensor(lat["mean"], dtype=torch.float32, device=device).reshape(1, -1, 1)
    std = torch.tensor(lat["std"], dtype=torch.float32, device=device).reshape(1, -1, 1)
    prior = _load_prior(m.get("prior"), root, conditioner, device)
    probes = _load_probes(m, root, device, ucfg.feature_dim)
    digests = {}  # the loaders hashed their external checkpoints already
    for section, obj in (("cae", cae), ("conditioner", conditioner)):
        refs = external_checkpoints(root, {section: m[section]})
        digest = getattr(obj, "sha256", None) or getattr(obj, "checksum", None)
        if refs and isinstance(digest, str) and len(digest) == 64:
            digests[str(refs[0].resolve())] = digest
    return Bundle(root, m, cae, conditioner, precond, device, bundle_hash(root, digests),
                  mean, std, prior, *probes)


def write_manifest(path: str | os.PathLike, manifest: dict) -> None:
    atomic_write_bytes(Path(path) / MANIFEST,
                       (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


def save_ldm(precond_or_net, path: Path, dtype=None) -> None:
    net = getattr(precond_or_net, "net", precond_or_net)
    save_module(net, path, net.kind, net.config.to_dict(), dtype=dtype)


def init_bundle(arch: str, out: str | os.PathLike, *, cae_arch: str | None = None,
                seed: int = 0, name: str | None = None, cae_file: str | None = None,
                conditioner_file: str | None = None) -> Path:
    """Write a bundle with an untrained diffusion model: for tests, and to start training.

    `cae_file` / `conditioner_file` put trained weights in it (copied); otherwise untrained
    ones are made. The latent statistics are measured on a few seconds of synthetic audio
    through the CAE, so the diffusion model sees roughly unit-scale latents even here
    (`riffwright train ldm` measures them again on the data).
    """
    import shutil

    import torch

    from engine.models.unet import UNet1d, arch_config

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty; choose a new folder")
    for f in (cae_file, conditioner_file):
        if f and not Path(f).is_file():
            raise BundleError(f"weights file not found: {f}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if cae_file:
        cae = load_cae(cae_file)
        shutil.copy2(cae_file, out / "cae.safetensors")
    else:
        cae = create_cae(cae_arch or ("tiny" if arch == "tiny" else "small")).eval()
        save_module(cae, out / "cae.safetensors", cae.kind, cae.config, dtype=torch.float16)
    if conditioner_file:
        cond = load_conditioner(conditioner_file)
        shutil.copy2(conditioner_file, out / "conditioner.safetensors")
    else:
        cond = create_conditioner("builtin")
        save_module(cond, out / "conditioner.safetensors", cond.kind, cond.config,
                    dtype=torch.float16)
    net = UNet1d(arch_config(arch, latent_dim=cae.latent_dim, clap_dim=cond.dim))
    save_ldm(net, out / "ldm.safetensors", dtype=torch.float16)
    mean, std = measure_untrained_stats(out / "cae.safetensors")
    cond_id = load_conditioner(out / "conditioner.safetensors").id
    manifest = {
        "format": FORMAT_VERSION,
        "name": name or f"untrained-{arch}",
        "description": f"{arch} bundle written by `riffwright models init`; its diffusion "
                       "model is untrained.",
        "trained": False,
        "sample_rate": cae.sample_rate,
        "latent": {"dim": cae.latent_dim, "hop": cae.hop, "mean": mean, "std": std},
        "sigma_data": 1.0,
        "window_frames": 128,
        "overlap_frames": 32,
        "cae": {"file": "cae.safetensors", "arch": cae.config.get("arch")},
        "conditioner": {"kind": "builtin", "file": "conditioner.safetensors", "id": cond_id},
        "ldm": {"file": "ldm.safetensors", "arch": arch},
        "defaults": dict(DEFAULT_PARAMETERS),
    }
    write_manifest(out, manifest)
    return out


def measure_untrained_stats(cae_file: Path) -> tuple[list[float], list[float]]:
    """Per-channel latent mean/std of a CAE over synthetic tones and noise (deterministic)."""
    import torch

    cae = load_cae(cae_file)
    g = torch.Generator().manual_seed(1234)
    sr = cae.sample_rate
    t = torch.arange(4 * sr) / sr
    waves = [0.3 * torch.sin(2 * torch.pi * f * t) for f in (110.0, 220.0, 440.0, 880.0)]
    waves.append(0.1 * torch.randn(4 * sr, generator=g))
    lat = cae.encode(torch.stack(waves))
    mean, std = latent_stats([lat])
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-3), 6) for v in std]
