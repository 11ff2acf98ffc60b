"""Trust and reliability: what a bundle, a session or a user's file can and cannot make
Riffwright do (docs/trust.md). Engine level, no Qt.

Each group keeps the cases of issue 16: malicious pickles (the marker file must never
appear), traversal ids and paths in sessions, saving into a user's folder, a full or
read-only disk (an injected ENOSPC/EROFS), kill-during-write leftovers, FIFOs and lying
headers, control characters in names, and corpora of tampered bundle.json / session.json
files that must give a RiffwrightError and never another exception.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.errors import BundleError, RiffwrightError

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
    from engine.models.conditioning import laion

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
    from engine.bundles.bundle import load_bundle
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
    from engine.models.cae.m2l import _read_state_dict

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
    from engine.models.conditioning.laion import verify_checkpoint
    from engine.weights import sha256_file

    fake = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    fake.write_bytes(b"not the published checkpoint")
    with pytest.raises(BundleError, match="not the published one"):
        verify_checkpoint(fake, sha256_file(fake))
    with pytest.raises(BundleError, match="not a text value"):
        verify_checkpoint(fake, 12345)


# --------------------------------------------------------------------------------------------
# B. a session stays inside its folder; Save never deletes what it did not write


def _session(n_tracks: int = 2, seconds: float = 0.25):
    from engine.document.session import Session, track_from_audio

    s = Session(48000)
    t = np.arange(int(48000 * seconds)) / 48000
    for i in range(n_tracks):
        s.tracks.append(track_from_audio(f"Track {i}", 0.1 * np.sin(2 * np.pi * 110 * (i + 1) * t)))
    return s


def _saved(tmp_path: Path) -> Path:
    folder = tmp_path / "song"
    _session().save(folder)
    return folder


def _edit_session(folder: Path, edit) -> None:
    m = json.loads((folder / "session.json").read_text())
    edit(m)
    (folder / "session.json").write_text(json.dumps(m))


@pytest.mark.parametrize("bad_id", ["/tmp/evil", "../../evil", "a/b", "a\\b", "..", "",
                                    "x\x00y", "x\ny", "a" * 65, 7, None])
def test_track_ids_are_slugs_on_creation_and_load(bad_id, tmp_path):
    from engine.document.session import Session, SessionError, Track

    with pytest.raises(SessionError, match="not valid"):
        Track(name="x", audio=np.zeros((1, 10), np.float32), id=bad_id)
    folder = _saved(tmp_path)
    _edit_session(folder, lambda m: m["tracks"][0].update(id=bad_id))
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(SessionError):
        Session.load(folder)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_traversal_ids_never_write_outside_on_save(tmp_path):
    """The issue's case: an id like '../../x' used as a file name on Save and autosave."""
    from engine.document.session import SessionError, autosave

    s = _session(1)
    s.tracks[0].id = "../../escaped"  # bypassing the constructor, as a bug or plug-in might
    with pytest.raises(SessionError, match="not valid"):
        s.save(tmp_path / "a" / "b" / "song")
    with pytest.raises(SessionError, match="not valid"):
        autosave(s, tmp_path / "auto", "slot")
    assert not list(tmp_path.rglob("escaped*"))


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_audio_paths_outside_the_folder_are_refused(where, tmp_path):
    from engine.document.session import Session, SessionError

    outside = tmp_path / "private.wav"
    sf.write(outside, np.zeros((4800, 1), np.float32), 48000, subtype="FLOAT")
    folder = _saved(tmp_path)
    tid = json.loads((folder / "session.json").read_text())["tracks"][0]["id"]
    if where == "absolute":
        _edit_session(folder, lambda m: m["tracks"][0].update(audio=str(outside)))
    elif where == "dotdot":
        _edit_session(folder, lambda m: m["tracks"][0].update(audio="../private.wav"))
    else:
        (folder / "audio" / f"{tid}.wav").unlink()
        (folder / "audio" / f"{tid}.wav").symlink_to(outside)
    with pytest.raises(SessionError, match="outside the session folder"):
        Session.load(folder)


def test_save_refuses_a_user_folder_and_keeps_its_files(tmp_path):
    from engine.document.session import SessionError

    vocals = tmp_path / "vocals"
    (vocals / "audio").mkdir(parents=True)
    (vocals / "peaks").mkdir()
    mine = [vocals / "audio" / "lead.wav", vocals / "peaks" / "lead.npy", vocals / "notes.txt"]
    for f in mine:
        f.write_bytes(b"the musician's own file")
    with pytest.raises(SessionError, match="not empty and is not a Riffwright session"):
        _session().save(vocals)
    assert all(f.read_bytes() == b"the musician's own file" for f in mine)
    assert not (vocals / "session.json").exists()
    assert sorted(p.name for p in (vocals / "audio").iterdir()) == ["lead.wav"]


def test_save_removes_only_files_the_session_wrote(tmp_path):
    from engine.document.session import Session

    folder = _saved(tmp_path)
    stray = [folder / "audio" / "mine.wav", folder / "peaks" / "mine.npy", folder / "x.txt"]
    for f in stray:
        f.write_bytes(b"keep me")
    s = Session.load(folder)
    gone = s.tracks.pop(0)
    s.save(folder)
    assert not (folder / "audio" / f"{gone.id}.wav").exists()  # ours: removed
    assert all(f.read_bytes() == b"keep me" for f in stray)  # not ours: untouched
    m = json.loads((folder / "session.json").read_text())
    assert m["files"] == sorted([f"audio/{s.tracks[0].id}.wav", f"peaks/{s.tracks[0].id}.npy"])
    # a tampered file list cannot make Save delete anything else
    m["files"] += ["x.txt", "../outside.txt", "session.json", "audio/mine.wav/../../x.txt"]
    (folder / "session.json").write_text(json.dumps(m))
    (tmp_path / "outside.txt").write_text("keep")
    Session.load(folder).save(folder)
    assert (folder / "x.txt").exists() and (tmp_path / "outside.txt").exists()


def test_save_as_from_a_session_writes_its_own_copy(tmp_path):
    from engine.document.session import Session

    folder = _saved(tmp_path)
    s = Session.load(folder)
    s.save(tmp_path / "copy")
    again = Session.load(tmp_path / "copy")
    assert [t.id for t in again.tracks] == [t.id for t in s.tracks]
    assert np.array_equal(again.tracks[0].audio, s.tracks[0].audio)


def _full_disk_after(monkeypatch, module, name: str, allowed: int):
    """Make `module.name` (a write function) fail with ENOSPC after `allowed` calls."""
    real = getattr(module, name)
    calls = {"n": 0}

    def writer(*a, **k):
        calls["n"] += 1
        if calls["n"] > allowed:
            raise OSError(errno.ENOSPC, "No space left on device", str(a[0]) if a else None)
        return real(*a, **k)

    monkeypatch.setattr(module, name, writer)


@pytest.mark.parametrize("allowed", [0, 1, 2, 3])
def test_save_on_a_full_disk_leaves_nothing_partial(allowed, tmp_path, monkeypatch):
    import engine.document.session as session_mod
    from engine.document.session import SessionError

    # the wav writes go through atomic_path, the peaks through _atomic_np_save: fail the
    # `allowed`-th file of the job
    real = session_mod.atomic_path
    calls = {"n": 0}

    def atomic(path, *a, **k):
        calls["n"] += 1
        if calls["n"] > allowed:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(session_mod, "atomic_path", atomic)
    folder = tmp_path / "song"
    with pytest.raises(SessionError, match="disk is full") as info:
        _session().save(folder)
    assert "\n" not in str(info.value)
    assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def test_save_failing_on_the_manifest_keeps_the_previous_session(tmp_path, monkeypatch):
    import engine.document.session as session_mod
    from engine.document.session import Session, SessionError, track_from_audio

    folder = _saved(tmp_path)
    before = (folder / "session.json").read_bytes()
    files_before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    s = Session.load(folder)
    s.tracks.append(track_from_audio("new", np.zeros(4800, np.float32)))
    s.tracks.pop(0)
    _full_disk_after(monkeypatch, session_mod, "atomic_write_text", 0)
    with pytest.raises(SessionError, match="disk is full"):
        s.save(folder)
    assert (folder / "session.json").read_bytes() == before
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files_before
    assert len(Session.load(folder).tracks) == 2


def test_stale_temp_files_are_cleaned_and_only_ours(tmp_path):
    from engine.fsutil import clean_stale_temps

    folder = _saved(tmp_path)
    old = [folder / "audio" / ".abc.k2j4h5g6.tmp.wav", folder / ".session.x_y1z2w3.tmp.json",
           folder / ".take.wav.abcdefgh.tmp"]
    keep = [folder / "audio" / ".hidden.wav", folder / "audio" / "take.tmp.wav",
            folder / ".abc.k2j4h5g6.tmp.wav.bak"]
    for f in old + keep:
        f.write_bytes(b"x")
        os.utime(f, (1_000_000, 1_000_000))
    young = folder / ".abc.zzzzzzzz.tmp.wav"
    young.write_bytes(b"in progress")
    assert clean_stale_temps(folder / "audio") == 1
    assert clean_stale_temps(folder) == 2
    assert not any(f.exists() for f in old)
    assert all(f.exists() for f in keep) and young.exists()
    old[0].write_bytes(b"x")
    os.utime(old[0], (1_000_000, 1_000_000))
    from engine.document.session import Session

    Session.load(folder).save(folder)  # a save cleans its own folder's leftovers
    assert not old[0].exists()


def test_drag_out_and_export_never_overwrite(tmp_path):
    from engine.document.export import export_stems, export_track_for_drag

    s = _session()
    s.tempo = 120
    drag = tmp_path / "exports"
    first = export_track_for_drag(s, s.tracks[0].id, drag)
    data = first.read_bytes()
    second = export_track_for_drag(s, s.tracks[0].id, drag)
    third = export_track_for_drag(s, s.tracks[0].id, drag)
    assert first.name == "Track_0_120bpm.wav"
    assert second.name == "Track_0_120bpm 2.wav" and third.name == "Track_0_120bpm 3.wav"
    assert first.read_bytes() == data
    user = tmp_path / "mixes"
    user.mkdir()
    (user / "mix_120bpm.wav").write_bytes(b"the musician's master")
    files = export_stems(s, user)
    assert (user / "mix_120bpm.wav").read_bytes() == b"the musician's master"
    assert files[-1].name == "mix_120bpm 2.wav"


def test_export_on_a_full_disk_is_one_message_and_no_file(tmp_path, monkeypatch):
    from engine.document.export import export_track_for_drag

    def full(path, *a, **k):
        raise sf.LibsndfileError(0, f"Error opening {str(path)!r}: ")  # not an OSError

    monkeypatch.setattr(sf, "write", full)
    s = _session(1)
    with pytest.raises(RiffwrightError, match="cannot export") as info:
        export_track_for_drag(s, s.tracks[0].id, tmp_path / "exports")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "exports").iterdir())


def test_dawproject_names_with_control_characters_give_valid_xml(tmp_path):
    import zipfile
    from xml.etree import ElementTree as ET

    from engine.document.dawproject import export_dawproject

    s = _session()
    s.tracks[0].name = "Bass\x01\x0b take\x1f"
    s.title = "Song\x00\x07"
    out = export_dawproject(s, tmp_path / "song")
    with zipfile.ZipFile(out) as z:
        project = ET.fromstring(z.read("project.xml"))
        ET.fromstring(z.read("metadata.xml"))
    names = [t.get("name") for t in project.iter("Track")]
    assert "Bass   take " in names


# --------------------------------------------------------------------------------------------
# C. a generation is one job: all takes land, or none


def _gen_args(bundle: Path, out, *extra: str) -> list[str]:
    return ["generate", "--prompt", "bass", "--model", str(bundle), "--out", str(out),
            "--quiet", "--duration", "0.5", "--steps", "2", *extra]


def _failing_sf_write(monkeypatch, allowed: int, make_error):
    real = sf.write
    calls = {"n": 0}

    def write(file, *a, **k):
        calls["n"] += 1
        if calls["n"] > allowed:
            raise make_error(str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(sf, "write", write)


ERRORS = {
    "enospc": (lambda f: OSError(errno.ENOSPC, "No space left on device", f), "disk is full"),
    "erofs": (lambda f: OSError(errno.EROFS, "Read-only file system", f), "read-only"),
    "eacces": (lambda f: PermissionError(errno.EACCES, "Permission denied", f),
               "permission denied"),
    "libsndfile": (lambda f: sf.LibsndfileError(0, f"Error opening {f!r}: "), "Error opening"),
}


@pytest.mark.parametrize("error", sorted(ERRORS))
def test_cli_generate_on_a_failing_disk_leaves_nothing(error, tiny_bundle, tmp_path, capsys,
                                                       monkeypatch):
    from engine.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.wav").write_bytes(b"an earlier take")
    make, text = ERRORS[error]
    _failing_sf_write(monkeypatch, 2, make)  # the third of four takes fails
    assert main(_gen_args(tiny_bundle, out, "--takes", "4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["earlier.wav"]


def test_cli_generate_writes_every_take_with_its_sidecar(tiny_bundle, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "out"
    stale = out / ".riffwright-staging-old"
    stale.mkdir(parents=True)
    (stale / "x.wav").write_bytes(b"x")
    os.utime(stale, (1_000_000, 1_000_000))
    assert main(_gen_args(tiny_bundle, out, "--takes", "2", "--json")) == 0
    rows = json.loads(capsys.readouterr().out)["stems"]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and not any(n.startswith(".") for n in names)
    for r in rows:
        assert Path(r["path"]).parent == out and Path(r["path"]).exists()
        assert Path(r["provenance"]).exists()


@pytest.mark.parametrize("case", ["file", "devnull", "long-name", "under-a-file"])
def test_cli_bad_out_is_one_line(case, tiny_bundle, tmp_path, capsys):
    from engine.cli import main

    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    out = {"file": a_file, "devnull": Path("/dev/null"), "long-name": tmp_path / ("x" * 300),
           "under-a-file": a_file / "out"}[case]
    assert main(_gen_args(tiny_bundle, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("riffwright: error:"), err
    assert a_file.read_text() == "x"


def test_cli_input_name_over_255_bytes_is_one_line(tiny_bundle, tmp_path, capsys):
    from engine.cli import main

    assert main(_gen_args(tiny_bundle, tmp_path / "out", "--context",
                          str(tmp_path / ("c" * 300 + ".wav")))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("riffwright: error:"), err


# --------------------------------------------------------------------------------------------
# D. bounded resources: FIFOs, long files, lying headers


def _run_with_timeout(fn, seconds: float = 10.0):
    """Run `fn` in a thread; fail (instead of hanging the suite) if it does not return."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"did not return within {seconds} s (blocked on the file?)"
    return result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("reader", ["load_audio", "audio_info", "load_input"])
def test_a_fifo_is_refused_at_once(reader, tmp_path):
    from engine import audio
    from engine.document import inputs
    from engine.errors import AudioError

    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    fn = {"load_audio": lambda: audio.load_audio(fifo),
          "audio_info": lambda: audio.audio_info(fifo),
          "load_input": lambda: inputs.load_input(fifo, 48000)}[reader]
    result = _run_with_timeout(fn)
    assert isinstance(result.get("error"), AudioError)
    assert "not a regular file" in str(result["error"])


def test_a_long_file_is_refused_from_its_header(tmp_path, monkeypatch):
    import tracemalloc

    from engine.audio import MAX_INPUT_SECONDS, load_audio
    from engine.errors import AudioError

    long = tmp_path / "six-hours.wav"  # 6 h at 1 kHz: a small file with a long header
    with sf.SoundFile(long, "w", 1000, 1, subtype="PCM_16") as f:
        block = np.zeros(3600 * 1000, np.int16)
        for _ in range(6):
            f.write(block)
    tracemalloc.start()
    with pytest.raises(AudioError, match=r"6:00:00 long; at most 10:00"):
        load_audio(long, sample_rate=48000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20  # nothing decoded
    assert MAX_INPUT_SECONDS == 600.0
    monkeypatch.setenv("RIFFWRIGHT_MAX_INPUT_SECONDS", str(7 * 3600))  # the setting
    assert load_audio(long)[0].shape == (1, 6 * 3600 * 1000)
    monkeypatch.setenv("RIFFWRIGHT_MAX_INPUT_SECONDS", "60")
    with pytest.raises(AudioError, match="RIFFWRIGHT_MAX_INPUT_SECONDS"):
        load_audio(long)


def _flac_claiming(path: Path, real_seconds: float, claimed_frames: int, sr: int = 48000):
    """A FLAC file holding `real_seconds` whose STREAMINFO claims `claimed_frames`."""
    t = np.arange(int(sr * real_seconds)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr,
             subtype="PCM_16", format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    off = 8 + 10  # STREAMINFO: rate(20) channels(3) bits(5) total samples(36), big-endian
    word = int.from_bytes(data[off:off + 8], "big")
    word = (word & ~((1 << 36) - 1)) | (claimed_frames & ((1 << 36) - 1))
    data[off:off + 8] = word.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def test_a_flac_claiming_2_to_the_36_samples_is_refused(tmp_path):
    import tracemalloc

    from engine.audio import load_audio
    from engine.errors import AudioError

    liar = tmp_path / "liar.flac"
    _flac_claiming(liar, 1.0, (1 << 36) - 1)
    tracemalloc.start()
    with pytest.raises(AudioError, match="long; at most"):
        load_audio(liar)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_header_lying_within_the_limit_allocates_only_what_is_there(tmp_path):
    import tracemalloc

    from engine.audio import load_audio
    from engine.errors import AudioError

    liar = tmp_path / "liar.flac"
    _flac_claiming(liar, 1.0, 590 * 48000)  # claims 590 s (113 MB of float32), holds 1 s
    tracemalloc.start()
    try:
        audio, _ = load_audio(liar)
        assert audio.shape[1] <= 48000 * 2
    except AudioError as e:
        assert "truncated" in str(e) or "damaged" in str(e)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB for a 1 s file"


def test_a_wav_claiming_4_gb_is_refused_as_truncated(tmp_path):
    import struct

    from engine.audio import load_audio
    from engine.errors import AudioError

    wav = tmp_path / "liar.wav"
    sf.write(wav, np.zeros(4800, np.float32), 48000, subtype="PCM_16")
    data = bytearray(wav.read_bytes())
    i = data.index(b"data")
    data[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFF0)
    wav.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="truncated"):
        load_audio(wav)


# --------------------------------------------------------------------------------------------
# E. tampered bundles and sessions: one RiffwrightError, never another exception


def _set(path: str, value):
    """An edit setting the dotted `path` of a manifest to `value`."""
    def edit(m):
        *parents, last = path.split(".")
        d = m
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


def _drop(path: str):
    def edit(m):
        *parents, last = path.split(".")
        d = m
        for p in parents:
            d = d[p]
        d.pop(last, None)
    return edit


BUNDLE_CORPUS = {
    "format-str": _set("format", "1"), "format-missing": _drop("format"),
    "format-future": _set("format", 99), "rate-null": _set("sample_rate", None),
    "rate-zero": _set("sample_rate", 0), "rate-mismatch": _set("sample_rate", 44100),
    "latent-list": _set("latent", []), "latent-dim-str": _set("latent.dim", "8"),
    "latent-dim-huge": _set("latent.dim", 10**12), "latent-dim-wrong": _set("latent.dim", 3),
    "mean-strings": lambda m: m["latent"].update(mean=["a"] * len(m["latent"]["mean"])),
    "std-zero": lambda m: m["latent"].update(std=[0.0] * len(m["latent"]["std"])),
    "std-missing": _drop("latent.std"), "hop-float": _set("latent.hop", 2.5),
    "cae-list": _set("cae", []), "cae-file-int": _set("cae.file", 5),
    "cae-file-traversal": _set("cae.file", "../../../etc/passwd"),
    "cae-file-absolute": _set("cae.file", "/etc/passwd"),
    "cae-file-home": _set("cae.file", "~/x.safetensors"),
    "cae-file-missing": _set("cae.file", "nope.safetensors"),
    "cae-file-is-ldm": _set("cae.file", "ldm.safetensors"),
    "cae-m2l-no-checkpoint": _set("cae", {"backend": "music2latent"}),
    "cae-m2l-missing-checkpoint": _set("cae", {"backend": "music2latent",
                                                "checkpoint": "/nonexistent/m2l.pt"}),
    "ldm-missing": _drop("ldm"), "ldm-file-null": _set("ldm.file", None),
    "ldm-file-is-cae": _set("ldm.file", "cae.safetensors"),
    "ldm-file-dir": _set("ldm.file", "."), "ldm-file-nul": _set("ldm.file", "a\x00b"),
    "cond-kind": _set("conditioner.kind", "evil"), "cond-kind-int": _set("conditioner.kind", 3),
    "cond-id-mismatch": _set("conditioner.id", "builtin-0000"),
    "cond-id-int": _set("conditioner.id", 5),
    "cond-laion-no-ckpt": _set("conditioner", {"kind": "laion-clap"}),
    "cond-laion-ckpt-int": _set("conditioner", {"kind": "laion-clap", "checkpoint": 5}),
    "cond-laion-sha-int": _set("conditioner", {"kind": "laion-clap", "checkpoint": "c.pt",
                                               "sha256": 5}),
    "cond-laion-traversal": _set("conditioner", {"kind": "laion-clap",
                                                 "checkpoint": "../../c.pt"}),
    "prior-str": _set("prior", "x"), "prior-missing-file": _set("prior", {"file": "p.st"}),
    "prior-traversal": _set("prior", {"file": "../p.safetensors"}),
    "defaults-str": _set("defaults", "fast"), "defaults-steps-str": _set("defaults",
                                                                        {"steps": "many"}),
    "sigma-negative": _set("sigma_data", -1), "sigma-str": _set("sigma_data", "1"),
    "window-str": _set("window_frames", "128"), "overlap-big": _set("overlap_frames", 500),
    "window-zero": _set("window_frames", 0), "name-int": _set("name", 5),
}


def _raw_bundle_json(kind: str):
    return {"list": b"[]", "garbage": b"\x00\xff not json", "latin1": "{\"name\": \"\xe9\"}"
            .encode("latin-1"), "deep": b"[" * 100_000 + b"]" * 100_000, "empty": b""}[kind]


@pytest.mark.parametrize("case", sorted(BUNDLE_CORPUS) + ["raw-" + k for k in
                                                          ("list", "garbage", "latin1", "deep",
                                                           "empty")])
def test_tampered_bundle_gives_one_bundle_error(case, tiny_bundle, tmp_path):
    from engine.bundles.bundle import bundle_hash, load_bundle, read_manifest

    root = _copy_bundle(tiny_bundle, tmp_path / "b")
    if case.startswith("raw-"):
        (root / "bundle.json").write_bytes(_raw_bundle_json(case[4:]))
    else:
        _edit_manifest(root, BUNDLE_CORPUS[case])
    with pytest.raises(RiffwrightError) as info:
        load_bundle(root)
    assert "\n" not in str(info.value)
    try:  # the models list / info paths read the same file
        read_manifest(root)
        bundle_hash(root)
    except RiffwrightError:
        pass


@pytest.mark.parametrize("damage", ["truncate-ldm", "garbage-cae", "empty-conditioner"])
def test_damaged_bundle_weights_give_one_bundle_error(damage, tiny_bundle, tmp_path):
    from engine.bundles.bundle import load_bundle

    root = _copy_bundle(tiny_bundle, tmp_path / "b")
    if damage == "truncate-ldm":
        data = (root / "ldm.safetensors").read_bytes()
        (root / "ldm.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage-cae":
        (root / "cae.safetensors").write_bytes(os.urandom(4096))
    else:
        (root / "conditioner.safetensors").write_bytes(b"")
    with pytest.raises(RiffwrightError):
        load_bundle(root)


def test_a_link_inside_a_bundle_is_never_copied(tiny_bundle, tmp_path, monkeypatch):
    from engine.bundles import model_store

    monkeypatch.setattr(model_store, "models_dir", lambda create=True: _mk(tmp_path / "models"))
    monkeypatch.setattr(model_store, "_staging", lambda: _mk(tmp_path / "staging"))
    secret = tmp_path / "passwords.txt"
    secret.write_text("root:secret")
    root = _copy_bundle(tiny_bundle, tmp_path / "b")
    (root / "MODEL_CARD.md").symlink_to(secret)
    with pytest.raises(BundleError, match="contains a link"):
        model_store.add_bundle(root, "linked")
    assert not (tmp_path / "models" / "linked").exists()
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    (root / "MODEL_CARD.md").unlink()
    (root / "weights").symlink_to(tmp_path, target_is_directory=True)  # a linked folder
    with pytest.raises(BundleError, match="contains a link"):
        model_store.add_bundle(root, "linked")


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_model_hash_covers_external_checkpoints(tiny_bundle, tmp_path):
    from engine.bundles.bundle import bundle_hash

    root = _copy_bundle(tiny_bundle, tmp_path / "b")
    ext = tmp_path / "elsewhere" / "m2l.pt"
    ext.parent.mkdir()
    ext.write_bytes(b"weights v1")
    _edit_manifest(root, lambda m: m.update(cae={"backend": "music2latent",
                                                 "checkpoint": str(ext)}))
    h1 = bundle_hash(root)
    ext.write_bytes(b"weights v2")
    assert bundle_hash(root) != h1
    _edit_manifest(root, lambda m: m.update(conditioner={"kind": "laion-clap",
                                                         "checkpoint": "clap.pt"}))
    (root / "clap.pt").write_bytes(b"a")
    h2 = bundle_hash(root)
    (root / "clap.pt").write_bytes(b"b")
    assert bundle_hash(root) != h2


SESSION_CORPUS = {
    "tracks-str": _set("tracks", "x"), "track-int": _set("tracks", [5]),
    "id-missing": lambda m: m["tracks"][0].pop("id"), "id-int": lambda m: m["tracks"][0]
    .update(id=5), "name-int": lambda m: m["tracks"][0].update(name=5),
    "audio-int": lambda m: m["tracks"][0].update(audio=5),
    "audio-empty": lambda m: m["tracks"][0].update(audio=""),
    "audio-missing": lambda m: m["tracks"][0].update(audio="audio/none.wav"),
    "audio-folder": lambda m: m["tracks"][0].update(audio="audio"),
    "audio-manifest": lambda m: m["tracks"][0].update(audio="session.json"),
    "audio-dev": lambda m: m["tracks"][0].update(audio="/dev/zero"),
    "offset-str": lambda m: m["tracks"][0].update(offset="3"),
    "offset-float": lambda m: m["tracks"][0].update(offset=2.5),
    "mute-str": lambda m: m["tracks"][0].update(mute="yes"),
    "gain-str": lambda m: m["tracks"][0].update(gain_db="loud"),
    "gain-nan": lambda m: m["tracks"][0].update(gain_db=float("nan")),
    "role": lambda m: m["tracks"][0].update(role="boss"),
    "role-int": lambda m: m["tracks"][0].update(role=1),
    "regions-str": lambda m: m["tracks"][0].update(regions="x"),
    "region-int": lambda m: m["tracks"][0].update(regions=[5]),
    "region-start-str": lambda m: m["tracks"][0].update(regions=[{"start": "a", "end": 1}]),
    "region-missing-end": lambda m: m["tracks"][0].update(regions=[{"start": 0}]),
    "peaks-int": lambda m: m["tracks"][0].update(peaks=5),
    "peaks-traversal": lambda m: m["tracks"][0].update(peaks="../../x.npy"),
    "provenance-str": lambda m: m["tracks"][0].update(provenance="x"),
    "take-str": lambda m: m["tracks"][0].update(take="1"),
    "duplicate-ids": lambda m: m["tracks"][1].update(id=m["tracks"][0]["id"]),
    "tempo-str": _set("tempo", "fast"), "meter-short": _set("meter", [4]),
    "meter-str": _set("meter", "4/4"), "meter-zero": _set("meter", [0, 4]),
    "loop-short": _set("loop", [1]), "loop-str": _set("loop", "x"),
    "recipe-list": _set("recipe", []), "active-list": _set("active_takes", []),
    "active-int": _set("active_takes", {"g": 5}), "rate-str": _set("sample_rate", "48k"),
    "rate-zero": _set("sample_rate", 0), "rate-other": _set("sample_rate", 44100),
    "version-str": _set("version", "2"), "version-future": _set("version", 99),
    "title-int": _set("title", 5), "key-int": _set("key", 5),
}


@pytest.mark.parametrize("case", sorted(SESSION_CORPUS) + ["raw-list", "raw-garbage",
                                                           "raw-deep", "raw-empty",
                                                           "wav-garbage"])
def test_malformed_session_gives_one_session_error(case, tmp_path):
    from engine.document.session import Session, SessionError

    folder = _saved(tmp_path)
    mf = folder / "session.json"
    if case in ("raw-list", "raw-garbage", "raw-deep", "raw-empty"):
        mf.write_bytes(_raw_bundle_json(case[4:]))
    elif case == "wav-garbage":
        tid = json.loads(mf.read_text())["tracks"][0]["id"]
        (folder / "audio" / f"{tid}.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    else:
        _edit_session(folder, SESSION_CORPUS[case])
    with pytest.raises(SessionError) as info:
        Session.load(folder)
    assert "\n" not in str(info.value)


def _mutations(value, rng, depth=0):
    """Random type-confused replacements for parts of a JSON document (seeded)."""
    junk = [None, 0, -1, 1e308, "", "x", "../x", "/etc/passwd", [], {}, [1, 2], {"a": 1},
            True, "\x00", float("nan")]
    if isinstance(value, dict) and value and depth < 3:
        key = rng.choice(sorted(value))
        out = dict(value)
        if rng.random() < 0.2:
            out.pop(key)
        else:
            out[key] = _mutations(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 3 and rng.random() < 0.7:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = _mutations(out[i], rng, depth + 1)
        return out
    return junk[rng.randrange(len(junk))]


def test_random_session_mutations_never_raise_anything_else(tmp_path):
    """A seeded property test: 300 type-confused session.json files, each loads or gives a
    SessionError."""
    import random

    from engine.document.session import Session, SessionError

    folder = _saved(tmp_path)
    original = json.loads((folder / "session.json").read_text())
    rng = random.Random(16)
    refused = 0
    for _ in range(300):
        (folder / "session.json").write_text(json.dumps(_mutations(copy.deepcopy(original), rng)))
        try:
            Session.load(folder)
        except SessionError:
            refused += 1
    assert refused > 100


def test_random_bundle_mutations_never_raise_anything_else(tiny_bundle, tmp_path):
    import random

    from engine.bundles.bundle import read_manifest

    root = _copy_bundle(tiny_bundle, tmp_path / "b")
    original = json.loads((root / "bundle.json").read_text())
    rng = random.Random(16)
    for _ in range(300):
        (root / "bundle.json").write_text(json.dumps(_mutations(copy.deepcopy(original), rng)))
        try:
            read_manifest(root)
        except BundleError:
            pass


# --------------------------------------------------------------------------------------------
# F. a training checkpoint is one unit


def _train_objects(value: float):
    import torch

    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return net, opt


def _saved_runs(out: Path, steps=(2, 4)):
    from engine.train_state import save_state

    for s in steps:
        net, opt = _train_objects(float(s))
        save_state(out, {"model": net}, opt, {"step": s})


def _restored_step(out: Path) -> tuple[int, float]:
    import torch

    from engine.train_state import load_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    meta = load_state(out, {"model": net}, opt)
    return int(meta["step"]), float(net.bias[0].detach())


def test_checkpoint_weights_and_state_always_agree(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _saved_runs(out, (2, 4, 6))
    step, bias = _restored_step(out)
    assert step == 6 and abs(bias - 6.0) < 0.01
    names = sorted(p.name for p in out.iterdir())
    assert names == ["train_state.json", "train_state.prev.json",
                     "train_state.step-4.safetensors", "train_state.step-6.safetensors"]


def test_a_kill_between_weights_and_state_resumes_the_previous_step(tmp_path, monkeypatch):
    import engine.weights as weights_mod
    from engine.train_state import save_state

    out = tmp_path / "run"
    out.mkdir()
    _saved_runs(out, (2, 4))
    real = weights_mod.atomic_write_bytes

    def killed(path, data):
        if Path(path).name == "train_state.json":
            raise KeyboardInterrupt  # the process dies after the weights, before the state
        return real(path, data)

    monkeypatch.setattr(weights_mod, "atomic_write_bytes", killed)
    net, opt = _train_objects(6.0)
    with pytest.raises(KeyboardInterrupt):
        save_state(out, {"model": net}, opt, {"step": 6})
    monkeypatch.setattr(weights_mod, "atomic_write_bytes", real)
    step, bias = _restored_step(out)
    assert step == 4 and abs(bias - 4.0) < 0.01  # weights and counters from the same step


def test_skewed_checkpoint_falls_back_then_refuses(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _saved_runs(out, (2, 4))
    # the newest weights replaced by another step's (a partial copy of the folder)
    shutil.copy(out / "train_state.step-2.safetensors", out / "train_state.step-4.safetensors")
    assert _restored_step(out)[0] == 2  # the previous complete checkpoint
    (out / "train_state.step-2.safetensors").unlink()
    with pytest.raises(RiffwrightError, match="no complete checkpoint"):
        _restored_step(out)


def test_legacy_checkpoint_still_resumes(tmp_path):
    """A run checkpointed before weights were named by step (one fixed file name)."""
    from safetensors.torch import save

    from engine.train_state import has_state

    out = tmp_path / "run"
    out.mkdir()
    net, opt = _train_objects(3.0)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v.detach().contiguous() if hasattr(v, "detach") else v
    (out / "train_state.safetensors").write_bytes(save(tensors))
    (out / "train_state.json").write_text(json.dumps(
        {"step": 3, "param_groups": opt.state_dict()["param_groups"]}))
    assert has_state(out)
    assert _restored_step(out)[0] == 3
