"""Trust and reliability: what a bundle, a session or a user's file can and cannot make
Riffwright do (docs/trust.md). Engine level, no Qt.

Each group keeps the cases of issue 16: malicious pickles (the marker file must never
appear), traversal ids and paths in sessions, saving into a user's folder, a full or
read-only disk (an injected ENOSPC/EROFS), kill-during-write leftovers, FIFOs and lying
headers, control characters in names, and corpora of tampered bundle.json / session.json
files that must give a RiffwrightError and never another exception.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BundleError

# --------------------------------------------------------------------------------------------
# A. a bundle can never run code


class _Exec:
    """Unpickling this runs `code` (the classic `__reduce__` payload)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class _System:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _write_payload(kind: str, path: Path, marker: Path) -> None:
    """Write one malicious checkpoint variant that creates `marker` when unpickled."""
    import torch

    code = f"open({str(marker)!r}, 'w').write('pwned')"
    if kind == "torch-zip-exec":  # torch.save's zip format, payload as the whole object
        torch.save(_Exec(code), path)
    elif kind == "torch-zip-nested":  # a plausible state dict with one poisoned entry
        torch.save({"state_dict": {"w": torch.zeros(2), "x": [_Exec(code)]}, "epoch": 3}, path)
    elif kind == "legacy-pickle-system":  # a bare pickle (torch's legacy path)
        path.write_bytes(pickle.dumps(_System(f"touch {marker}"), protocol=2))
    elif kind == "protocol0-global":  # hand-written protocol 0: GLOBAL posix.system
        path.write_bytes(b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    elif kind == "eval-in-dict":
        path.write_bytes(pickle.dumps({"state_dict": _Exec(code)}, protocol=4))
    else:  # pragma: no cover
        raise ValueError(kind)


PAYLOADS = ["torch-zip-exec", "torch-zip-nested", "legacy-pickle-system", "protocol0-global",
            "eval-in-dict"]


@pytest.fixture
def laion_without_extra(monkeypatch, tmp_path):
    """Let the LAION-CLAP loader run up to the checkpoint read without the optional extra
    and its hub cache (neither is installed here); the model itself is never built."""
    from engine.conditioning import laion

    monkeypatch.setattr(laion, "_require_extra", lambda: None)
    monkeypatch.setattr(laion, "check_hub_cache", lambda cache=None: tmp_path)

    def no_model(*_a, **_k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a refused checkpoint must never reach model construction")

    monkeypatch.setattr(laion, "_set_offline", no_model)


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(root: Path, edit) -> None:
    m = json.loads((root / "bundle.json").read_text())
    edit(m)
    (root / "bundle.json").write_text(json.dumps(m))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("name", ["my-clap.pt", "music_audioset_epoch_15_esc_90.14.pt"])
def test_malicious_laion_checkpoint_in_a_bundle_never_runs(
        payload, name, tiny_bundle, tmp_path, laion_without_extra):
    from engine.bundle import load_bundle
    from engine.weights import sha256_file

    marker = tmp_path / "marker"
    root = _copy_bundle(tiny_bundle, tmp_path / "evil-bundle")
    _write_payload(payload, root / name, marker)
    digest = sha256_file(root / name)  # the bundle vouches for its own file

    def edit(m):
        m["conditioner"] = {"kind": "laion-clap", "checkpoint": name, "sha256": digest}

    _edit_manifest(root, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    msg = str(info.value)
    assert "\n" not in msg and name in msg
    if name.startswith("music_"):  # a published name: the bundle's digest does not override
        assert "not the published one" in msg
    else:
        assert "never unpickles code" in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_music2latent_checkpoint_never_runs(payload, tmp_path):
    from engine.cae.m2l import _read_state_dict

    marker = tmp_path / "marker"
    ckpt = tmp_path / "music2latent.pt"
    _write_payload(payload, ckpt, marker)
    with pytest.raises(BundleError, match="never unpickles code"):
        _read_state_dict(ckpt)
    assert not marker.exists()


def test_cli_reports_a_malicious_bundle_in_one_line(tiny_bundle, tmp_path, capsys,
                                                   laion_without_extra):
    from engine.cli import main
    from engine.weights import sha256_file

    marker = tmp_path / "marker"
    root = _copy_bundle(tiny_bundle, tmp_path / "evil-bundle")
    _write_payload("torch-zip-exec", root / "clap.pt", marker)
    digest = sha256_file(root / "clap.pt")
    _edit_manifest(root, lambda m: m.update(
        conditioner={"kind": "laion-clap", "checkpoint": "clap.pt", "sha256": digest}))
    out = tmp_path / "out"
    assert main(["generate", "--prompt", "x", "--model", str(root), "--out", str(out),
                 "--quiet", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clap.pt" in err[0]
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_plain_weights_with_numpy_values_still_load(tmp_path):
    """The allow-list admits what published checkpoints hold besides tensors: NumPy scalars."""
    import torch

    from engine.safeload import load_weights_only

    ckpt = tmp_path / "ok.pt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": np.int64(15),
                "best": np.float64(0.9), "arr": np.arange(3)}, ckpt)
    got = load_weights_only(ckpt, "test")
    assert torch.equal(got["state_dict"]["w"], torch.ones(3)) and int(got["epoch"]) == 15


def test_a_bundle_digest_never_replaces_a_published_one(tmp_path):
    from engine.conditioning.laion import verify_checkpoint
    from engine.weights import sha256_file

    fake = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    fake.write_bytes(b"not the published checkpoint")
    with pytest.raises(BundleError, match="not the published one"):
        verify_checkpoint(fake, sha256_file(fake))
    with pytest.raises(BundleError, match="not a text value"):
        verify_checkpoint(fake, 12345)
