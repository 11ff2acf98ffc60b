"""The window's small dialogs: how a take was made, the arrangement prompts, the keyboard
shortcuts and About. Each is built here and returned (or answered) to the window, which opens
it; none edits the session."""

from __future__ import annotations

import json
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.controller import command_line, recipe_lines
from engine.document.session import Track

ARRANGE_EXAMPLE = "drums, tight funk groove\nelectric bass\nrhodes chords"


def ask_arrangement(parent: QWidget) -> list[str]:
    """The prompts of an arrangement, one per line ([] when cancelled)."""
    dlg = QDialog(parent)
    dlg.setWindowTitle("Arrange")
    lay = QVBoxLayout(dlg)
    lay.addWidget(QLabel("One prompt per line. Each part is generated in turn and hears "
                         "the context plus the parts before it."))
    edit = QPlainTextEdit(ARRANGE_EXAMPLE)
    lay.addWidget(edit)
    bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
    bb.accepted.connect(dlg.accept)
    bb.rejected.connect(dlg.reject)
    lay.addWidget(bb)
    if dlg.exec() != QDialog.Accepted:
        return []
    return [x.strip() for x in edit.toPlainText().splitlines() if x.strip()]


def _mono(box: QPlainTextEdit) -> QPlainTextEdit:
    box.setReadOnly(True)
    box.setStyleSheet("font-family: monospace;")
    return box


def provenance_dialog(parent: QWidget, track: Track, on_copied: Callable[[], None],
                      on_regenerate: Callable[[], None]) -> QDialog:
    """The take's recipe in words, the command line that makes it again (with a copy
    button), and the raw record folded away for the curious."""
    prov = track.provenance or {}
    dlg = QDialog(parent)
    dlg.setWindowTitle(f"How “{track.name}” was made")
    lay = QVBoxLayout(dlg)
    recipe = QLabel("<br>".join(recipe_lines(prov)))
    recipe.setTextFormat(Qt.RichText)
    recipe.setWordWrap(True)
    recipe.setTextInteractionFlags(Qt.TextSelectableByMouse)
    lay.addWidget(recipe)
    cmd = command_line(prov, track)
    lay.addWidget(QLabel("The same take from the command line:"))
    cmd_box = _mono(QPlainTextEdit(cmd))
    cmd_box.setFixedHeight(70)
    lay.addWidget(cmd_box)
    b_copy = QPushButton("Copy command line")
    b_copy.clicked.connect(lambda: (QGuiApplication.clipboard().setText(cmd), on_copied()))
    raw = _mono(QPlainTextEdit(json.dumps(prov, indent=2, default=str)))
    raw.hide()
    b_raw = QPushButton("Show the full record")
    b_raw.setCheckable(True)
    b_raw.toggled.connect(raw.setVisible)
    b = QPushButton("Regenerate exactly")
    b.clicked.connect(lambda: (dlg.accept(), on_regenerate()))
    row = QHBoxLayout()
    for w in (b_copy, b_raw, b):
        row.addWidget(w)
    lay.addLayout(row)
    lay.addWidget(raw, 1)
    dlg.resize(620, 420)
    dlg.setAttribute(Qt.WA_DeleteOnClose)
    return dlg


def rich_box(parent: QWidget, title: str, html: str,
             icon: QMessageBox.Icon = QMessageBox.Information) -> QMessageBox:
    """A non-modal message box showing rich text (the shortcuts, About)."""
    box = QMessageBox(icon, title, html, QMessageBox.Ok, parent)
    box.setTextFormat(Qt.RichText)
    box.setAttribute(Qt.WA_DeleteOnClose)
    return box


def shortcuts_html(rows: list[tuple[str, str]]) -> str:
    return "<table cellspacing=4>" + "".join(
        f"<tr><td><b>{k}</b></td><td>{n}</td></tr>" for n, k in rows) + "</table>"


class DialogLauncher:
    """Opens the window's dialogs: the non-modal ones (how a take was made, the shortcuts,
    About) stay referenced here while open; the Models and Arrange dialogs are modal."""

    def __init__(self, parent: QWidget, model_path: Callable[[], str | None],
                 status: Callable[[str], None]):
        self.parent = parent
        self.model_path = model_path  # the loaded bundle's folder (About names its licences)
        self.status = status
        self.provenance_box: QDialog | None = None
        self.shortcuts_box: QMessageBox | None = None
        self.about_box: QMessageBox | None = None

    def provenance(self, track: Track, on_regenerate: Callable[[], None]) -> QDialog:
        self.provenance_box = provenance_dialog(
            self.parent, track, lambda: self.status("command line copied"), on_regenerate)
        self.provenance_box.open()
        return self.provenance_box

    def shortcuts(self) -> None:
        from app.actions import shortcut_rows

        self.shortcuts_box = rich_box(self.parent, "Keyboard shortcuts",
                                      shortcuts_html(shortcut_rows()))
        self.shortcuts_box.open()

    def about_text(self) -> str:
        from app.about import about_html

        return about_html(self.model_path())

    def about(self) -> None:
        self.about_box = rich_box(self.parent, "About Riffwright", self.about_text(),
                                  QMessageBox.NoIcon)
        self.about_box.open()

    def models(self, on_chosen: Callable[[str], None]) -> None:
        from app.models_dialog import open_models_dialog

        open_models_dialog(self.parent, current=self.model_path(), on_chosen=on_chosen)

    def arrangement(self) -> list[str]:
        return ask_arrangement(self.parent)
