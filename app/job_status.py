"""The status bar's view of a running generation: one progress bar, its label and Cancel.

It shows what `GenerationController` reports (started, a `JobProgress`, stopped) and asks for
nothing; Cancel is wired by the window to the controller.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from app.generation import JobProgress


class JobStatus:
    """Three status-bar widgets, hidden while no generation runs."""

    def __init__(self, bar: QStatusBar):
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setRange(0, 100)
        self.label = QLabel("")
        self.cancel = QPushButton("Cancel")
        self.cancel.setToolTip("Cancel the generation (Esc)")
        for w in (self.label, self.progress, self.cancel):
            bar.addPermanentWidget(w)
        self.show_running(False)

    def show_running(self, running: bool) -> None:
        for w in (self.label, self.progress, self.cancel):
            w.setVisible(running)

    def started(self) -> None:
        self.progress.setValue(0)
        self.label.setText("starting…")
        self.show_running(True)

    def show_progress(self, p: JobProgress) -> None:
        self.progress.setValue(p.percent)
        self.progress.setFormat(p.format)
        self.label.setText(p.label)

    def cancelling(self) -> None:
        self.label.setText("cancelling…")
