"""The dark theme: a palette plus a small style sheet, tuned to look like a music tool."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

BG = "#1b1d21"
PANEL = "#23262b"
RAISED = "#2c3036"
LINE = "#3a3f47"
TEXT = "#d7dae0"
MUTED = "#8b919b"
ACCENT = "#f0a030"
PLAYHEAD = "#ffd54a"
SELECTED_BG = "#262b33"  # the selected lane's waveform background
REGION = (240, 90, 90, 70)
LOOP = (80, 170, 255, 40)

STYLE = f"""
QWidget {{ color: {TEXT}; font-size: 9pt; }}
QMainWindow, QDialog {{ background: {BG}; }}
QDockWidget::title {{ background: {PANEL}; padding: 4px 8px; font-weight: bold; }}
QToolBar {{ background: {PANEL}; border: none; border-bottom: 1px solid {LINE}; spacing: 4px; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid {LINE}; }}
QFrame#laneHeader {{ background: {PANEL}; border-bottom: 1px solid {LINE}; }}
QFrame#laneHeader[selected="true"] {{ background: #30353d; border-left: 3px solid {ACCENT}; }}
QLineEdit, QPlainTextEdit, QSpinBox, QDoubleSpinBox, QComboBox {{
    background: {RAISED}; border: 1px solid {LINE}; border-radius: 3px; padding: 2px 4px;
    selection-background-color: {ACCENT}; selection-color: #111;
}}
QLabel#laneName {{ font-weight: bold; }}
QLineEdit#laneNameEdit {{ font-weight: bold; padding: 0px 2px; }}
QPushButton, QToolButton {{
    background: {RAISED}; border: 1px solid {LINE}; border-radius: 3px; padding: 3px 8px;
}}
QPushButton:hover, QToolButton:hover {{ border-color: {ACCENT}; }}
QPushButton:pressed, QToolButton:pressed {{ background: #3a3f47; }}
QPushButton:disabled {{ color: #5c6169; }}
QPushButton#primary {{ background: {ACCENT}; color: #16181b; font-weight: bold; border: none; }}
QPushButton#primary:disabled {{ background: #6b5530; color: #2a2a2a; }}
QToolButton:checked {{ background: #444a53; }}
QToolButton#mute:checked {{ background: #d9534f; color: white; border-color: #d9534f; }}
QToolButton#solo:checked {{ background: #e8c547; color: #16181b; border-color: #e8c547; }}
QToolButton#ctx:checked {{ background: #3f8fd0; color: white; border-color: #3f8fd0; }}
QToolButton#take:checked {{ background: {ACCENT}; color: #16181b; border-color: {ACCENT}; }}
QSlider::groove:horizontal {{ height: 4px; background: {LINE}; border-radius: 2px; }}
QSlider::handle:horizontal {{
    background: {TEXT}; width: 10px; margin: -5px 0; border-radius: 5px;
}}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 2px; }}
QProgressBar {{ background: {RAISED}; border: 1px solid {LINE}; border-radius: 3px;
    text-align: center; height: 14px; }}
QProgressBar::chunk {{ background: {ACCENT}; }}
QGroupBox {{ border: 1px solid {LINE}; border-radius: 4px; margin-top: 10px; padding-top: 6px; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 8px; color: {MUTED}; }}
QLabel#device {{ color: #16181b; background: #7ccf6a; border-radius: 3px; padding: 1px 6px;
    font-weight: bold; }}
QLabel#hint {{ color: {MUTED}; }}
QLabel#clock {{ font-family: monospace; font-size: 12pt; color: {ACCENT}; padding: 0 8px; }}
QScrollBar:horizontal {{ background: {BG}; height: 12px; }}
QScrollBar::handle:horizontal {{ background: {LINE}; border-radius: 4px; min-width: 30px; }}
QScrollBar:vertical {{ background: {BG}; width: 12px; }}
QScrollBar::handle:vertical {{ background: {LINE}; border-radius: 4px; min-height: 30px; }}
QMenu {{ background: {PANEL}; border: 1px solid {LINE}; }}
QMenu::item:selected {{ background: {ACCENT}; color: #111; }}
QToolTip {{ background: {RAISED}; color: {TEXT}; border: 1px solid {LINE}; }}
"""


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    for role, col in (
        (QPalette.Window, BG), (QPalette.WindowText, TEXT), (QPalette.Base, RAISED),
        (QPalette.AlternateBase, PANEL), (QPalette.Text, TEXT), (QPalette.Button, RAISED),
        (QPalette.ButtonText, TEXT), (QPalette.Highlight, ACCENT),
        (QPalette.HighlightedText, "#111111"), (QPalette.ToolTipBase, RAISED),
        (QPalette.ToolTipText, TEXT), (QPalette.PlaceholderText, MUTED),
    ):
        pal.setColor(role, QColor(col))
    app.setPalette(pal)
    app.setStyleSheet(STYLE)
