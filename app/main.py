"""The composition root: builds every object of the app once and wires them together.

`run_app(argv)` is what `riffwright` (no arguments) calls. Nothing here is a singleton or a
module global; tests build the same objects through `build_window`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

APP_NAME = "Riffwright"


def data_dirs() -> tuple[Path, Path]:
    """(autosave root, permanent export folder for drag-out)."""
    from platformdirs import user_data_dir, user_music_dir

    auto = Path(user_data_dir("riffwright", appauthor=False)) / "autosave"
    try:
        export = Path(user_music_dir()) / "Riffwright exports"
    except Exception:  # noqa: BLE001 - no music dir on some systems
        export = Path(user_data_dir("riffwright", appauthor=False)) / "exports"
    return auto, export


def build_window(settings: QSettings, *, model: str | None = None, device: str = "auto",
                 autosave_root: Path | None = None, export_dir: Path | None = None,
                 use_audio: bool = True, modal_messages: bool = True, load_model: bool = True):
    """Create the session, engine bridge, transport and window (the app's object graph)."""
    from app.bridge import EngineBridge
    from app.transport import Transport
    from app.window import MainWindow
    from engine.document.session import Session

    auto, export = data_dirs()
    session = Session(48000)
    bridge = EngineBridge(device=device)
    transport = Transport(session, use_audio=use_audio)
    win = MainWindow(settings, bridge, transport, session,
                     autosave_root=autosave_root or auto, export_dir=export_dir or export,
                     modal_messages=modal_messages)
    bridge.setParent(win)
    transport.setParent(win)
    if load_model:
        # after the first paint: the window is usable while the model loads
        QTimer.singleShot(50, lambda: bridge.load_model(model))
    return win


def run_app(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(prog="riffwright", description="Riffwright desktop app")
    ap.add_argument("--session", help="open this session folder")
    ap.add_argument("--model", help="model bundle folder (default: the built-in one)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--no-audio", action="store_true", help="run without audio output")
    ap.add_argument("files", nargs="*", help="audio files to import")
    args = ap.parse_args(argv or [])

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else APP_NAME])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setDesktopFileName("app.riffwright.Riffwright")  # matches the .desktop entry
    from engine.bundles.bundle import resources_dir

    icons = resources_dir() / "icons" / "app"
    icon = QIcon()
    for png in sorted(icons.glob("riffwright-*.png")):
        icon.addFile(str(png))
    if not icon.isNull():
        app.setWindowIcon(icon)
    from app.theme import apply_theme

    apply_theme(app)
    settings = QSettings(APP_NAME, APP_NAME)
    win = build_window(settings, model=args.model, device=args.device,
                       use_audio=not args.no_audio)
    win.show()
    if args.session:
        win.open_path(args.session)
    else:
        QTimer.singleShot(0, win.offer_recovery)
    if args.files:
        QTimer.singleShot(0, lambda: win.import_paths(args.files, wait=False))
    QTimer.singleShot(0, lambda: win.status(
        f"ready in {time.perf_counter() - t0:.2f} s — drop audio files to start"))
    if os.environ.get("RIFFWRIGHT_STARTUP_PROBE"):
        QTimer.singleShot(0, lambda: (print(f"startup {time.perf_counter() - t0:.3f}"),
                                      app.quit()))
    return app.exec()
