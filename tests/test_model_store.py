"""engine.bundles.model_store: adding, listing and removing bundles and checkpoints (no Qt, no torch)."""

import hashlib
import json

import pytest

import engine.bundles.bundle as bundle_mod
import engine.bundles.model_store as store
from engine.errors import BundleError, RiffwrightError


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """Point the user models folder at a temp dir; hide the built-in bundle."""
    models = tmp_path / "data" / "riffwright" / "models"
    monkeypatch.setattr(bundle_mod, "user_models_dir", lambda: models)
    monkeypatch.setattr(store, "user_models_dir", lambda: models)
    monkeypatch.setattr(bundle_mod, "default_bundle_dir", lambda: tmp_path / "no-builtin")
    monkeypatch.delenv("RIFFWRIGHT_MODEL", raising=False)
    return models


def fake_bundle(folder, *, name="fake", arch="tiny", trained=False, files=True):
    """A bundle folder whose manifest validates (weights are placeholder bytes)."""
    folder.mkdir(parents=True)
    manifest = {
        "format": 1, "name": name, "trained": trained, "sample_rate": 48000,
        "latent": {"dim": 2, "hop": 4096, "mean": [0.0, 0.0], "std": [1.0, 1.0]},
        "cae": {"file": "cae.safetensors"},
        "conditioner": {"kind": "builtin", "file": "conditioner.safetensors"},
        "ldm": {"file": "ldm.safetensors", "arch": arch},
    }
    (folder / "bundle.json").write_text(json.dumps(manifest))
    if files:
        for f in ("cae", "conditioner", "ldm"):
            (folder / f"{f}.safetensors").write_bytes(b"x" * 1000)
    (folder / "MODEL_CARD.md").write_text("# fake\n")
    return folder


def staging_leftovers(models):
    staging = models.parent / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def test_models_dir_is_created(user_dir):
    assert not user_dir.exists()
    assert store.models_dir() == user_dir
    assert user_dir.is_dir()


def test_add_bundle_copies_and_lists(user_dir, tmp_path):
    src = fake_bundle(tmp_path / "src" / "my-bass", name="My bass", arch="small")
    seen = []
    dest = store.add_bundle(src, progress=lambda d, t: seen.append((d, t)))
    assert dest == user_dir / "my-bass"
    assert (dest / "ldm.safetensors").read_bytes() == b"x" * 1000
    assert (dest / "MODEL_CARD.md").is_file()
    assert seen and seen[-1][0] == seen[-1][1]  # progress reaches the total
    assert staging_leftovers(user_dir) == []
    models = store.list_models()
    assert len(models) == 1
    m = models[0]
    assert (m["type"], m["name"], m["origin"], m["arch"]) == ("bundle", "My bass", "user", "small")
    assert m["status"] == "untrained" and m["removable"] and m["active"]
    assert bundle_mod.find_bundle() == dest  # the only bundle there loads


def test_add_bundle_under_another_name_and_duplicates(user_dir, tmp_path):
    src = fake_bundle(tmp_path / "b1", trained=True)
    store.add_bundle(src, name="default")
    assert bundle_mod.find_bundle() == user_dir / "default"
    with pytest.raises(BundleError, match="already installed"):
        store.add_bundle(src, name="default")
    src2 = fake_bundle(tmp_path / "b2", name="second")
    store.add_bundle(src2, name="default", replace=True)
    assert json.loads((user_dir / "default" / "bundle.json").read_text())["name"] == "second"
    assert staging_leftovers(user_dir) == []
    assert [m["status"] for m in store.list_models()] == ["untrained"]


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "checkpoints", "a/b", ""])
def test_add_bundle_refuses_bad_names(user_dir, tmp_path, bad):
    src = fake_bundle(tmp_path / "b")
    with pytest.raises(RiffwrightError, match="cannot be a model name"):
        store.add_bundle(src, name=bad or " ")


def test_add_bundle_validates_before_copying(user_dir, tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        store.add_bundle(bad)
    with pytest.raises(BundleError, match="not a model bundle"):
        store.add_bundle(tmp_path)  # no bundle.json
    incomplete = fake_bundle(tmp_path / "incomplete", files=False)
    with pytest.raises(BundleError, match="ldm.safetensors .* is missing"):
        store.add_bundle(incomplete)
    with pytest.raises(BundleError, match="is not a folder"):
        store.add_bundle(tmp_path / "nowhere")
    assert not any(user_dir.iterdir()) if user_dir.exists() else True


def test_add_bundle_interrupted_leaves_nothing(user_dir, tmp_path):
    src = fake_bundle(tmp_path / "big")

    def boom(done, total):
        if done > 1500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.add_bundle(src, progress=boom)
    assert not (user_dir / "big").exists()
    assert staging_leftovers(user_dir) == []
    assert store.list_models() == []


def test_add_checkpoint_with_pasted_checksum(user_dir, tmp_path):
    ck = tmp_path / "music2latent.pt"
    ck.write_bytes(b"pretend weights" * 100)
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    dest = store.add_checkpoint(ck, "music2latent", f"  SHA256:{digest.upper()} ")
    assert dest == user_dir / "checkpoints" / "music2latent" / "music2latent.pt"
    assert dest.read_bytes() == ck.read_bytes()
    (entry,) = store.list_models()
    assert (entry["type"], entry["arch"], entry["status"]) == ("checkpoint", "music2latent",
                                                              "verified")
    assert entry["sha256"] == digest
    assert bundle_mod.list_bundles() == []  # the checkpoints folder is not a bundle


def test_add_checkpoint_rejects_a_mismatch(user_dir, tmp_path):
    ck = tmp_path / "clap.pt"
    ck.write_bytes(b"truncated")
    with pytest.raises(BundleError, match="the checksum you gave .* nothing was added"):
        store.add_checkpoint(ck, "laion-clap", "0" * 64)
    assert not (user_dir / "checkpoints" / "laion-clap" / "clap.pt").exists()
    assert staging_leftovers(user_dir) == []


def test_add_checkpoint_uses_the_known_table(user_dir, tmp_path):
    ck = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"  # a published name, wrong bytes
    ck.write_bytes(b"not the real checkpoint")
    assert store.known_checkpoint_sha256("laion-clap", ck.name)
    with pytest.raises(BundleError, match="the published checksum"):
        store.add_checkpoint(ck, "laion-clap")


def test_add_checkpoint_refuses_unverifiable_pickles(user_dir, tmp_path):
    ck = tmp_path / "mystery.ckpt"
    ck.write_bytes(b"pickle")
    with pytest.raises(BundleError, match="could run code"):
        store.add_checkpoint(ck, "laion-clap")
    st = tmp_path / "clap.safetensors"
    st.write_bytes(b"safe")
    dest = store.add_checkpoint(st, "laion-clap")
    assert dest.is_file()
    assert store.list_models()[0]["status"] == "unverified"


def test_add_checkpoint_input_errors(user_dir, tmp_path):
    ck = tmp_path / "a.pt"
    ck.write_bytes(b"1")
    with pytest.raises(RiffwrightError, match="not a SHA-256"):
        store.add_checkpoint(ck, "laion-clap", "abc123")
    with pytest.raises(RiffwrightError, match="unknown checkpoint kind"):
        store.add_checkpoint(ck, "vae", "0" * 64)
    with pytest.raises(BundleError, match="not found"):
        store.add_checkpoint(tmp_path / "missing.pt", "laion-clap", "0" * 64)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BundleError, match="empty"):
        store.add_checkpoint(tmp_path / "empty.pt", "laion-clap", "0" * 64)


def test_remove_model(user_dir, tmp_path):
    store.add_bundle(fake_bundle(tmp_path / "one"))
    ck = tmp_path / "m.safetensors"
    ck.write_bytes(b"w")
    ckdest = store.add_checkpoint(ck, "music2latent")
    store.remove_model("one")
    assert not (user_dir / "one").exists()
    store.remove_model(ckdest)
    assert not ckdest.exists() and not (ckdest.parent / "m.safetensors.json").exists()
    assert store.list_models() == []
    assert staging_leftovers(user_dir) == []
    with pytest.raises(RiffwrightError, match="no model named"):
        store.remove_model("one")
    for outside in ("..", "../../x", str(tmp_path / "one"), "checkpoints"):
        with pytest.raises(RiffwrightError):
            store.remove_model(outside)


def test_builtin_bundle_is_listed_but_not_removable(user_dir, tmp_path, monkeypatch):
    builtin = fake_bundle(tmp_path / "resources" / "models" / "default", name="built-in one",
                          trained=True)
    monkeypatch.setattr(bundle_mod, "default_bundle_dir", lambda: builtin)
    (m,) = store.list_models()
    assert (m["origin"], m["status"], m["active"], m["removable"]) == ("built-in", "ok", True,
                                                                      False)
    with pytest.raises(RiffwrightError, match="only models added there"):
        store.remove_model(builtin)


def test_real_bundle_round_trip(user_dir, tiny_bundle):
    dest = store.add_bundle(tiny_bundle, name="tiny")
    assert bundle_mod.find_bundle() == dest
    assert bundle_mod.bundle_hash(dest) == bundle_mod.bundle_hash(tiny_bundle)
