"""The Models dialog: see, add and remove model bundles and checkpoints; pick the one to use.

The work is done by `engine.bundles.model_store` (Qt-free); copies run on a worker thread with a
progress bar, so a 2 GB checkpoint does not freeze the window. Open it from the main window:

    from app.models_dialog import open_models_dialog
    open_models_dialog(self, current=self.bridge.model_path, on_chosen=self.choose_model)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.bundles import model_store
from engine.errors import RiffwrightError

COLUMNS = ("Name", "Type", "Origin", "Architecture", "Status")
PATH_ROLE = Qt.ItemDataRole.UserRole


class _Job(QObject):
    """Runs one store operation on a Python thread; its signals arrive on the GUI thread."""

    sig_progress = Signal(int, int)  # MB done, MB total (ints stay small)
    sig_done = Signal(object)
    sig_failed = Signal(str)

    def start(self, fn: Callable, *args, **kwargs) -> None:
        def progress(done: int, total: int) -> None:
            self.sig_progress.emit(done >> 20, max(total >> 20, 1))

        def work() -> None:
            try:
                result = fn(*args, progress=progress, **kwargs)
            except RiffwrightError as e:
                self.sig_failed.emit(str(e))
            except Exception as e:  # noqa: BLE001 - a bug, but keep the dialog alive
                self.sig_failed.emit(f"{type(e).__name__}: {e}")
            else:
                self.sig_done.emit(result)

        threading.Thread(target=work, name="riffwright-model-store", daemon=True).start()


class CheckpointDialog(QDialog):
    """Ask for a checkpoint file, its kind and the SHA-256 to check it against."""

    def __init__(self, parent: QWidget | None = None, path: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Add checkpoint")
        self.path = QLineEdit(path)
        self.path.setPlaceholderText("a .pt, .ckpt or .safetensors file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.kind = QComboBox()
        for kind, label in model_store.CHECKPOINT_KINDS.items():
            self.kind.addItem(label, kind)
        self.sha = QLineEdit()
        self.sha.setPlaceholderText("paste the SHA-256 published with the file")
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        # room for the longest hint (three lines), so it is never cut whatever is chosen
        self.hint.setMinimumHeight(self.hint.fontMetrics().lineSpacing() * 3 + 4)
        form = QFormLayout()
        form.addRow("File", row)
        form.addRow("Kind", self.kind)
        form.addRow("SHA-256", self.sha)
        form.addRow("", self.hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.path.textChanged.connect(self._guess)
        self.kind.currentIndexChanged.connect(self._guess)
        self._guess()  # before sizing: the hint's text decides the height
        self.resize(560, self.sizeHint().height())

    def _browse(self) -> None:
        f, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint file", self.path.text(),
            "Checkpoints (*.pt *.pth *.ckpt *.safetensors);;All files (*)")
        if f:
            self.path.setText(f)

    def _guess(self) -> None:
        name = Path(self.path.text().strip()).name
        if "music2latent" in name.lower() and self.sender() is self.path:
            self.kind.setCurrentIndex(self.kind.findData("music2latent"))
        known = model_store.known_checkpoint_sha256(self.kind.currentData(), name) if name \
            else None
        if known:
            self.hint.setText(f"{name} is a published checkpoint: it is checked against the "
                              f"known SHA-256 {known[:16]}… unless you paste another.")
        else:
            self.hint.setText("The copy is checked against this checksum. Pickled checkpoints "
                              "(.pt, .ckpt) need one: loading a pickle runs code.")

    def values(self) -> tuple[str, str, str | None]:
        return self.path.text().strip(), self.kind.currentData(), self.sha.text().strip() or None


class ModelsDialog(QDialog):
    """Bundles and checkpoints in the user's models folder, plus the built-in bundle."""

    sig_model_chosen = Signal(str)  # the bundle folder to load
    sig_job_done = Signal(bool, str)  # ok, message (after an add finished or failed)

    def __init__(self, parent: QWidget | None = None, *, current: str | None = None,
                 modal_messages: bool = True):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.current = str(current) if current else None
        self.modal_messages = modal_messages
        self._job: _Job | None = None

        self.folder_label = QLabel()
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(4, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self.use_selected())

        self.b_add_bundle = QPushButton("Add bundle folder…")
        self.b_add_ckpt = QPushButton("Add checkpoint…")
        self.b_remove = QPushButton("Remove")
        self.b_open = QPushButton("Open models folder")
        self.b_use = QPushButton("Use this model")
        self.b_use.setDefault(True)
        self.b_close = QPushButton("Close")
        self.b_add_bundle.clicked.connect(lambda: self.add_bundle_folder())
        self.b_add_ckpt.clicked.connect(lambda: self.add_checkpoint_file())
        self.b_remove.clicked.connect(lambda: self.remove_selected())
        self.b_open.clicked.connect(self._open_folder)
        self.b_use.clicked.connect(lambda: self.use_selected())
        self.b_close.clicked.connect(self.reject)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)

        side = QVBoxLayout()
        for b in (self.b_add_bundle, self.b_add_ckpt, self.b_remove, self.b_open):
            side.addWidget(b)
        side.addStretch(1)
        body = QHBoxLayout()
        body.addWidget(self.tree, 1)
        body.addLayout(side)
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress, 1)
        bottom.addStretch(0)
        bottom.addWidget(self.b_use)
        bottom.addWidget(self.b_close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.folder_label)
        lay.addLayout(body, 1)
        lay.addWidget(self.message_label)
        lay.addLayout(bottom)
        self.resize(760, 380)
        self.refresh()

    # ------------------------------------------------------------------ list
    def refresh(self, select: str | None = None) -> None:
        try:
            folder = model_store.models_dir()  # first run: create it
            self.folder_label.setText(f"Your models folder: {folder}")
        except RiffwrightError as e:
            self.show_message(str(e), error=True)
        keep = select or self.selected_path()
        self.tree.clear()
        for m in model_store.list_models():
            item = self._item(m)
            self.tree.addTopLevelItem(item)
            if keep and m["path"] == keep:
                self.tree.setCurrentItem(item)
        self._update_buttons()

    def _item(self, m: dict) -> QTreeWidgetItem:
        """One row of the list: name, kind, origin, architecture, status (in use / default),
        the path and any hash or problem as tooltips, the model in use in bold."""
        bundle = m["type"] == "bundle"
        status = m["status"]
        if bundle and m["path"] == self.current:
            status = f"{status} · in use"
        elif m.get("active"):
            status = f"{status} · default"
        item = QTreeWidgetItem([m["name"], "bundle" if bundle else "checkpoint", m["origin"],
                                m["arch"] or "—", status])
        item.setData(0, PATH_ROLE, m)
        item.setToolTip(0, m["path"])
        if m.get("sha256"):
            item.setToolTip(4, f"SHA-256 {m['sha256']}")
        if bundle and m["status"] not in ("ok", "untrained"):
            item.setToolTip(4, m["status"])
        if m["path"] == self.current:
            f = QFont(item.font(0))
            f.setBold(True)
            item.setFont(0, f)
        return item

    def entries(self) -> list[dict]:
        return [self.tree.topLevelItem(i).data(0, PATH_ROLE)
                for i in range(self.tree.topLevelItemCount())]

    def selected(self) -> dict | None:
        items = self.tree.selectedItems()
        return items[0].data(0, PATH_ROLE) if items else None

    def selected_path(self) -> str | None:
        m = self.selected()
        return m["path"] if m else None

    def select_path(self, path: str) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, PATH_ROLE)["path"] == str(path):
                self.tree.setCurrentItem(item)
                return

    def _usable(self, m: dict | None) -> bool:
        return bool(m) and m["type"] == "bundle" and m["status"] in ("ok", "untrained")

    def _update_buttons(self) -> None:
        m = self.selected()
        busy = self.busy
        self.b_use.setEnabled(not busy and self._usable(m))
        self.b_remove.setEnabled(not busy and bool(m) and m["removable"])
        self.b_add_bundle.setEnabled(not busy)
        self.b_add_ckpt.setEnabled(not busy)

    # ------------------------------------------------------------------ actions
    @property
    def busy(self) -> bool:
        return self._job is not None

    def show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #e0645a;" if error else "")
        if error and self.modal_messages:
            QMessageBox.warning(self, "Models", text)

    def add_bundle_folder(self, path: str | None = None) -> bool:
        """Copy a bundle folder into the models folder (asks for it when `path` is None)."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Model bundle folder (with bundle.json)")
            if not path:
                return False
        return self._start(f"Copying {Path(path).name}…", model_store.add_bundle, path)

    def add_checkpoint_file(self, path: str | None = None, kind: str | None = None,
                            sha256: str | None = None) -> bool:
        """Copy and verify a checkpoint (asks for file, kind and checksum when not given)."""
        if path is None or kind is None:
            dlg = CheckpointDialog(self, path or "")
            if kind:
                dlg.kind.setCurrentIndex(dlg.kind.findData(kind))
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return False
            path, kind, sha256 = dlg.values()
            if not path:
                return False
        return self._start(f"Copying and checking {Path(path).name}…",
                           model_store.add_checkpoint, path, kind, sha256)

    def _start(self, text: str, fn: Callable, *args) -> bool:
        if self.busy:
            return False
        self._job = job = _Job(self)
        job.sig_progress.connect(self._on_progress)
        job.sig_done.connect(self._on_done)
        job.sig_failed.connect(self._on_failed)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.show_message(text)
        self._update_buttons()
        job.start(fn, *args)
        return True

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _finish(self) -> None:
        if self._job is not None:
            self._job.deleteLater()
        self._job = None
        self.progress.setVisible(False)

    def _on_done(self, dest) -> None:
        self._finish()
        self.refresh(select=str(dest))
        self.show_message(f"Added {Path(dest).name} to your models folder.")
        self.sig_job_done.emit(True, str(dest))

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.refresh()
        self.show_message(message, error=True)
        self.sig_job_done.emit(False, message)

    def remove_selected(self, confirm: bool | None = None) -> bool:
        m = self.selected()
        if not m or not m["removable"] or self.busy:
            return False
        if confirm if confirm is not None else self.modal_messages:
            answer = QMessageBox.question(
                self, "Remove model",
                f"Delete {m['name']} from your models folder?\n{m['path']}")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        try:
            model_store.remove_model(m["path"])
        except RiffwrightError as e:
            self.show_message(str(e), error=True)
            return False
        self.refresh()
        self.show_message(f"Removed {m['name']}.")
        return True

    def use_selected(self) -> bool:
        m = self.selected()
        if self.busy or not self._usable(m):
            return False
        self.current = m["path"]
        self.sig_model_chosen.emit(m["path"])
        self.accept()
        return True

    def _open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(model_store.models_dir())))

    def reject(self) -> None:
        if self.busy:
            self.show_message("A copy is in progress; wait for it to finish.")
            return
        super().reject()


def open_models_dialog(parent: QWidget | None = None, current: str | None = None,
                       on_chosen: Callable[[str], None] | None = None) -> ModelsDialog:
    """Show the Models dialog (modal); `on_chosen(path)` runs when the user picks a bundle."""
    dlg = ModelsDialog(parent, current=current)
    if on_chosen is not None:
        dlg.sig_model_chosen.connect(on_chosen)
    dlg.exec()
    return dlg
