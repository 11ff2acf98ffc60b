"""The Models dialog (pytest-qt, offscreen): list, add, remove, choose; no torch needed."""

import hashlib
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

import engine.bundles.bundle as bundle_mod  # noqa: E402
import engine.bundles.model_store as store  # noqa: E402
from app.models_dialog import ModelsDialog  # noqa: E402
from tests.test_model_store import fake_bundle  # noqa: E402


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    models = tmp_path / "data" / "models"
    builtin = fake_bundle(tmp_path / "resources" / "models" / "default", name="Built-in",
                          arch="small", trained=True)
    monkeypatch.setattr(bundle_mod, "user_models_dir", lambda: models)
    monkeypatch.setattr(store, "user_models_dir", lambda: models)
    monkeypatch.setattr(bundle_mod, "default_bundle_dir", lambda: builtin)
    monkeypatch.delenv("RIFFWRIGHT_MODEL", raising=False)
    return models, builtin


@pytest.fixture
def dialog(qtbot, dirs):
    dlg = ModelsDialog(current=str(dirs[1]), modal_messages=False)
    qtbot.addWidget(dlg)
    dlg.show()
    return dlg


def row_texts(dlg):
    return [[dlg.tree.topLevelItem(i).text(c) for c in range(5)]
            for i in range(dlg.tree.topLevelItemCount())]


def test_first_run_creates_the_folder_and_lists_the_builtin(dialog, dirs):
    models, builtin = dirs
    assert models.is_dir()
    assert str(models) in dialog.folder_label.text()
    assert row_texts(dialog) == [["Built-in", "bundle", "built-in", "small", "ok · in use"]]
    dialog.select_path(str(builtin))
    assert dialog.b_use.isEnabled()
    assert not dialog.b_remove.isEnabled()  # the built-in bundle stays


def test_add_bundle_folder_then_use_it(qtbot, dialog, tmp_path, dirs):
    src = fake_bundle(tmp_path / "incoming" / "bass-v2", name="Bass v2", arch="base")
    with qtbot.waitSignal(dialog.sig_job_done, timeout=10000) as blocker:
        assert dialog.add_bundle_folder(str(src))
        assert dialog.busy and not dialog.b_add_bundle.isEnabled()
    assert blocker.args[0] is True
    dest = dirs[0] / "bass-v2"
    assert dest.joinpath("bundle.json").is_file()
    # the only bundle in the user folder now loads first
    assert ["Bass v2", "bundle", "user", "base", "untrained · default"] in row_texts(dialog)
    assert dialog.selected_path() == str(dest)  # the new bundle is selected
    assert "Added bass-v2" in dialog.message_label.text()
    with qtbot.waitSignal(dialog.sig_model_chosen) as chosen:
        qtbot.mouseClick(dialog.b_use, Qt.MouseButton.LeftButton)
    assert chosen.args == [str(dest)]
    assert dialog.result() == dialog.DialogCode.Accepted


def test_a_bad_bundle_is_reported_not_copied(qtbot, dialog, tmp_path, dirs):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bundle.json").write_text('{"format": 1}')
    with qtbot.waitSignal(dialog.sig_job_done, timeout=10000) as blocker:
        dialog.add_bundle_folder(str(bad))
    ok, message = blocker.args
    assert not ok and "missing field 'sample_rate'" in message
    assert "missing field" in dialog.message_label.text()
    assert not (dirs[0] / "bad").exists()
    assert not dialog.busy and dialog.b_add_bundle.isEnabled()


def test_add_checkpoint_checks_the_checksum(qtbot, dialog, tmp_path, dirs):
    ck = tmp_path / "music2latent.pt"
    ck.write_bytes(b"weights" * 1000)
    with qtbot.waitSignal(dialog.sig_job_done, timeout=10000) as blocker:
        dialog.add_checkpoint_file(str(ck), "music2latent", "f" * 64)
    assert blocker.args[0] is False and "nothing was added" in blocker.args[1]
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    with qtbot.waitSignal(dialog.sig_job_done, timeout=10000) as blocker:
        dialog.add_checkpoint_file(str(ck), "music2latent", digest)
    assert blocker.args[0] is True
    assert ["music2latent.pt", "checkpoint", "user", "music2latent", "verified"] in \
        row_texts(dialog)
    assert not dialog.b_use.isEnabled()  # a checkpoint is not a model to load by itself
    assert dialog.b_remove.isEnabled()
    assert dialog.remove_selected(confirm=False)
    assert not (dirs[0] / "checkpoints" / "music2latent" / "music2latent.pt").exists()


def test_remove_a_user_bundle(qtbot, dialog, tmp_path, dirs):
    dest = store.add_bundle(fake_bundle(tmp_path / "old"))
    dialog.refresh(select=str(dest))
    assert dialog.selected_path() == str(dest)
    assert dialog.remove_selected(confirm=False)
    assert not dest.exists()
    assert [r[2] for r in row_texts(dialog)] == ["built-in"]


def test_checkpoint_dialog_knows_published_checksums(qtbot, tmp_path):
    from app.models_dialog import CheckpointDialog

    dlg = CheckpointDialog(path=str(tmp_path / "music_audioset_epoch_15_esc_90.14.pt"))
    qtbot.addWidget(dlg)
    dlg.kind.setCurrentIndex(dlg.kind.findData("laion-clap"))
    assert "known SHA-256" in dlg.hint.text()
    dlg.path.setText(str(tmp_path / "music2latent.pt"))
    assert dlg.values()[1] == "music2latent"
