"""Render the app icon: resources/icons/app/riffwright.svg -> PNGs (16..1024), .ico, .icns.

    .venv/bin/python packaging/make_icons.py

Uses Qt's SVG renderer (PySide6, already in the venv); the .ico (Windows) and .icns (macOS)
containers are written here by hand, holding the PNGs, so no other tool is needed.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons" / "app"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09",
              1024: b"ic10"}


def render(svg: Path, size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        sys.exit(f"make_icons: {svg} is not a valid SVG")
    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(p)
    p.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    buf.close()
    return bytes(data.data())


def write_ico(path: Path, pngs: dict[int, bytes]) -> None:
    """ICO with PNG-compressed entries (Windows Vista and later read these)."""
    sizes = [s for s in (16, 24, 32, 48, 64, 128, 256) if s in pngs]
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = 6 + 16 * len(sizes)
    entries, blobs = b"", b""
    for s in sizes:
        data = pngs[s]
        dim = 0 if s >= 256 else s  # 0 means 256
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    path.write_bytes(header + entries + blobs)


def write_icns(path: Path, pngs: dict[int, bytes]) -> None:
    """ICNS with PNG payloads (macOS 10.7 and later)."""
    body = b""
    for s, code in ICNS_TYPES.items():
        if s in pngs:
            body += code + struct.pack(">I", 8 + len(pngs[s])) + pngs[s]
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)


def main() -> int:
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication.instance() or QGuiApplication(["make_icons"])
    svg = ICONS / "riffwright.svg"
    pngs = {s: render(svg, s) for s in (*SIZES, 1024)}
    for s in SIZES:
        (ICONS / f"riffwright-{s}.png").write_bytes(pngs[s])
    write_ico(ICONS / "riffwright.ico", pngs)
    write_icns(ICONS / "riffwright.icns", pngs)
    print(f"make_icons: wrote {len(SIZES)} PNGs, riffwright.ico and riffwright.icns to {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
