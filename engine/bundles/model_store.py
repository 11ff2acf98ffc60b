"""The user's models folder: add, list and remove model bundles and third-party checkpoints.

Qt-free; `app/models_dialog.py` is its window. Layout of `<user data dir>/models/`:

```
models/
  default/               a bundle named `default` loads first (see engine.bundles.bundle.find_bundle)
  my-bass-model/         any other bundle folder (bundle.json + safetensors)
  checkpoints/
    laion-clap/music_audioset_epoch_15_esc_90.14.pt    (+ .json: kind, SHA-256, source)
    music2latent/music2latent.pt
```

Every copy is atomic: files are staged in `<user data dir>/.staging/` (same disk, outside the
models folder so a half-copied bundle is never seen as a bundle), checked, then renamed into
place. Problems a user can fix raise `BundleError` / `RiffwrightError` with one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.bundles.bundle import (
    MANIFEST,
    find_bundle,
    list_bundles,
    read_manifest,
    user_models_dir,
)
from engine.errors import BundleError, RiffwrightError
from engine.models.conditioning.laion import KNOWN_CHECKPOINTS
from engine.weights import sha256_file

CHECKPOINTS = "checkpoints"
CHECKPOINT_KINDS = {
    "laion-clap": "LAION-CLAP text/audio encoder",
    "music2latent": "Music2Latent autoencoder",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ +-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl"}

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def known_checkpoint_sha256(kind: str, filename: str) -> str | None:
    """The SHA-256 we know for a published checkpoint file name, if any."""
    if kind == "laion-clap":
        entry = KNOWN_CHECKPOINTS.get(filename)
        return entry[2] if entry else None
    return None


def models_dir(create: bool = True) -> Path:
    """`<user data dir>/models`, created on first use."""
    d = user_models_dir()
    if create:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RiffwrightError(f"cannot create the models folder {d}: {e.strerror}") from None
    return d


def _staging() -> Path:
    d = user_models_dir().parent / ".staging"
    d.mkdir(parents=True, exist_ok=True)
    return d


def normalize_sha256(value: str | None) -> str | None:
    """Accept `ABC...`, `sha256:abc...`, with spaces; None/empty -> None; else 64 hex digits."""
    if value is None:
        return None
    v = re.sub(r"\s+", "", value).lower()
    if v.startswith("sha256:"):
        v = v[len("sha256:"):]
    if not v:
        return None
    if not _HEX64.match(v):
        raise RiffwrightError(
            f"'{value.strip()[:80]}' is not a SHA-256 checksum (64 hexadecimal digits)")
    return v


def _check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name) or name == CHECKPOINTS or name.endswith("."):
        raise RiffwrightError(
            f"'{name}' cannot be a model name: use letters, digits, spaces, '.', '_', '+' or "
            f"'-' (not '{CHECKPOINTS}')")
    return name


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _check_space(where: Path, needed: int) -> None:
    free = shutil.disk_usage(where).free
    if needed > free:
        raise RiffwrightError(f"not enough free space in {where}: {needed / 1e6:.0f} MB needed, "
                              f"{free / 1e6:.0f} MB free")


def _copy_file(src: Path, dst: Path, progress: Progress | None, done: int, total: int,
               chunk: int = 4 << 20, nofollow: bool = False) -> int:
    """Copy one file in chunks (reporting progress); return the new byte count done.
    `nofollow`: a link at `src` is refused (ELOOP) rather than read (files of a bundle)."""
    flags = os.O_RDONLY | (getattr(os, "O_NOFOLLOW", 0) if nofollow else 0)
    fd = os.open(src, flags)
    with os.fdopen(fd, "rb") as fi, open(dst, "wb") as fo:
        while block := fi.read(chunk):
            fo.write(block)
            done += len(block)
            if progress:
                progress(done, total)
        fo.flush()
        os.fsync(fo.fileno())
    shutil.copystat(src, dst)
    return done


def _bundle_files(src: Path, manifest: dict) -> list[str]:
    """The weights files a bundle's manifest names that must be inside the bundle folder."""
    files = [manifest["ldm"]["file"]]
    cae = manifest["cae"]
    if cae.get("backend", "riffwright") != "music2latent":
        if not isinstance(cae.get("file"), str):
            raise BundleError(f"{src / MANIFEST}: cae: missing field 'file'")
        files.append(cae["file"])
    cond = manifest["conditioner"]
    if cond.get("kind", "builtin") != "laion-clap":
        if not isinstance(cond.get("file"), str):
            raise BundleError(f"{src / MANIFEST}: conditioner: missing field 'file'")
        files.append(cond["file"])
    for spec in (cae, cond):  # external checkpoints given relative to the bundle
        ck = spec.get("checkpoint")
        if isinstance(ck, str) and ck and not Path(ck).expanduser().is_absolute():
            files.append(ck)
    return files


def _refuse_links(src: Path) -> None:
    """A bundle is copied as plain files: a symbolic link inside it (which could point at
    any file on this machine) refuses the whole bundle, before anything is copied."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                raise BundleError(f"{src} contains a link ({p.relative_to(src)}); a bundle must "
                                  "hold plain files only, so it was not added")
            if not p.is_dir() and not p.is_file():
                raise BundleError(f"{src} contains {p.relative_to(src)}, which is not a plain "
                                  "file; it was not added")


def _check_complete(src: Path, manifest: dict) -> None:
    """Every file the manifest names is there and not empty (an interrupted copy)."""
    for rel in _bundle_files(src, manifest):
        f = src / rel
        if not f.is_file():
            raise BundleError(f"{src} is incomplete: {rel} (named in {MANIFEST}) is missing")
        if f.stat().st_size == 0:
            raise BundleError(f"{src} is damaged: {rel} is empty (an interrupted copy?)")


def _copy_tree(src: Path, dest: Path, progress: Progress | None, total: int) -> None:
    """Copy the bundle's plain files into `dest` (links are never followed; caches and
    Finder files are left out), reporting bytes copied of `total`."""
    done = 0
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if any(part in {"__pycache__", ".DS_Store"} for part in rel.parts):
            continue
        if f.is_symlink():  # appeared after the check: still never followed
            raise BundleError(f"{src} contains a link ({rel}); it was not added")
        if f.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif f.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            done = _copy_file(f, dest / rel, progress, done, total, nofollow=True)


def _swap_in(tmp: Path, dest: Path, name: str) -> Path | None:
    """Move the finished copy to `dest`; the bundle it replaced, moved aside (to remove
    once all went well), or None. A failed move puts the replaced bundle back."""
    old = None
    if dest.exists():
        old = _staging() / f"{name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except OSError:
        if old is not None and not dest.exists():
            os.replace(old, dest)
        raise
    return old


def add_bundle(src: str | os.PathLike, name: str | None = None, *, replace: bool = False,
               progress: Progress | None = None) -> Path:
    """Copy a bundle folder into the models folder after validating it; return the new path.

    `name` defaults to the folder's name (`default` makes it the one that loads first).
    """
    src = Path(src).expanduser()
    if not src.is_dir():
        raise BundleError(f"{src} is not a folder")
    _refuse_links(src)
    _check_complete(src, read_manifest(src))  # raises BundleError naming the problem
    name = _check_name(name or src.name)
    root = models_dir()
    dest = root / name
    if src.resolve() == dest.resolve():
        return dest  # already installed
    if dest.exists() and not replace:
        raise BundleError(f"a model named '{name}' is already installed; remove it first or "
                          "add this one under another name")
    total = _tree_size(src)
    _check_space(root, total)
    tmp = _staging() / f"{name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        tmp.mkdir()
        _copy_tree(src, tmp, progress, total)
        read_manifest(tmp)  # the copy reads back
        old = _swap_in(tmp, dest, name)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RiffwrightError(f"could not copy {src} into {root}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def add_checkpoint(path: str | os.PathLike, kind: str, expected_sha256: str | None = None, *,
                   progress: Progress | None = None) -> Path:
    """Copy a LAION-CLAP or Music2Latent checkpoint into `models/checkpoints/<kind>/`.

    The copy's SHA-256 must equal `expected_sha256` (pasted by the user) or, failing that,
    the value known for the file's published name. A pickled checkpoint (.pt, .ckpt) with no
    checksum to check is refused: loading a pickle runs code. A .safetensors file holds no
    code; without a checksum its digest is only recorded.
    """
    if kind not in CHECKPOINT_KINDS:
        raise RiffwrightError(f"unknown checkpoint kind '{kind}' (one of: "
                              f"{', '.join(CHECKPOINT_KINDS)})")
    src = Path(path).expanduser()
    if not src.is_file():
        raise BundleError(f"checkpoint not found: {src}")
    size = src.stat().st_size
    if size == 0:
        raise BundleError(f"{src} is empty (an interrupted download?)")
    given = normalize_sha256(expected_sha256)
    expected = given or known_checkpoint_sha256(kind, src.name)
    pickle = src.suffix.lower() != ".safetensors"
    if expected is None and pickle:
        raise BundleError(
            f"no SHA-256 is known for {src.name}, and it is a pickle ({src.suffix}) that could "
            "run code when loaded: paste the checksum published with it")
    _check_name(src.name)
    folder = models_dir() / CHECKPOINTS / kind
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    _check_space(folder, size)
    tmp = _staging() / f"{src.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        _copy_file(src, tmp, progress, 0, size)

        digest = sha256_file(tmp)
        if expected is not None and digest != expected:
            where = "the checksum you gave" if given else "the published checksum"
            raise BundleError(
                f"{src.name} has SHA-256 {digest[:16]}…, {where} is {expected[:16]}…: the file "
                "is truncated, corrupted or not the checkpoint named; nothing was added")
        info = {"kind": kind, "sha256": digest, "verified": expected is not None,
                "source": str(src), "bytes": size,
                "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        side = _sidecar(dest)
        tmp_side = tmp.with_name(tmp.name + ".json")
        tmp_side.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, dest)
        os.replace(tmp_side, side)
    except OSError as e:
        raise RiffwrightError(f"could not copy {src} into {folder}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".json").unlink(missing_ok=True)
    return dest


def _sidecar(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")


def list_models() -> list[dict]:
    """Every bundle Riffwright can see and every installed checkpoint, one dict each.

    Keys: type ("bundle"|"checkpoint"), name, path, origin ("user", "built-in",
    "RIFFWRIGHT_MODEL"), arch (bundles: the diffusion model's; checkpoints: the kind), status
    ("ok", "untrained", "verified", "unverified" or the error), active (the bundle that loads
    when none is chosen), removable.
    """
    try:
        active = str(find_bundle())
    except RiffwrightError:
        active = None
    return [_bundle_entry(b, active) for b in list_bundles()] + _checkpoint_entries()


def _bundle_entry(b: dict, active: str | None) -> dict:
    """`list_models`' row for one bundle `list_bundles` found."""
    entry = {"type": "bundle", "name": b.get("name") or Path(b["path"]).name,
             "path": b["path"], "origin": b["origin"], "arch": b.get("arch") or "",
             "active": b["path"] == active, "removable": b["origin"] == "user"}
    if "error" in b:
        entry["status"] = b["error"]
        return entry
    try:
        trained = read_manifest(b["path"]).get("trained", True)
    except RiffwrightError as e:
        trained, entry["status"] = True, str(e)
    entry.setdefault("status", "ok" if trained else "untrained")
    return entry


def _checkpoint_entries() -> list[dict]:
    """`list_models`' rows for the checkpoints installed in the user's models folder."""
    out = []
    root = user_models_dir() / CHECKPOINTS
    for kind in CHECKPOINT_KINDS:
        folder = root / kind
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        for f in files:
            if not f.is_file() or f.name.endswith(".json"):
                continue
            try:
                info = json.loads(_sidecar(f).read_text())
            except (OSError, ValueError):
                info = {}
            out.append({"type": "checkpoint", "name": f.name, "path": str(f), "origin": "user",
                        "arch": kind, "active": False, "removable": True,
                        "sha256": info.get("sha256", ""),
                        "status": "verified" if info.get("verified") else "unverified"})
    return out


def remove_model(name: str | os.PathLike) -> None:
    """Delete a bundle or checkpoint from the models folder (by name or path).

    Only what is inside the user's models folder can be removed; the built-in model cannot.
    """
    root = user_models_dir().resolve()
    p = Path(name).expanduser()
    target = (p if p.is_absolute() else root / p).resolve()
    if target == root or root not in target.parents:
        raise RiffwrightError(f"{name} is not in your models folder ({root}); only models "
                              "added there can be removed")
    if not target.exists():
        raise RiffwrightError(f"no model named '{name}' in {root}")
    if target.is_dir():
        if target.parent != root or target.name == CHECKPOINTS:
            raise RiffwrightError(f"{name} is not a model")
        trash = _staging() / f"{target.name}.{uuid.uuid4().hex[:8]}.removed"
        os.replace(target, trash)  # gone from the models folder at once, then deleted
        shutil.rmtree(trash, ignore_errors=True)
    else:
        target.unlink()
        _sidecar(target).unlink(missing_ok=True)
