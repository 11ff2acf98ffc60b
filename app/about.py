"""The About box's text: version, the licences of what ships with the app.

Kept apart from the window so it can be read (and tested) without building any widget.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

# What the default bundle is made of and under which terms (resources/models/default/
# MODEL_CARD.md tells the whole story).
DEFAULT_MODEL_TERMS = (
    "weights trained by the Riffwright developers, MIT licence (like Riffwright itself); "
    "training audio rendered with FluidSynth and the FluidR3_GM SoundFont (MIT) from "
    "music21-corpus scores and generated grooves"
)
THIRD_PARTY = (
    ("Qt 6 / PySide6", "LGPL-3.0"),
    ("PyTorch", "BSD-3-Clause"),
    ("pyqtgraph", "MIT"),
    ("NumPy, SciPy, soundfile", "BSD-3-Clause"),
    ("PortAudio / sounddevice", "MIT"),
)


def model_terms(path: str | None) -> tuple[str, str]:
    """(name, terms) of a bundle: its own `license` field when it has one; the default
    bundle's terms for the bundle we ship; otherwise say that the bundle's author decides."""
    if not path:
        return "none loaded", ""
    p = Path(path)
    try:
        manifest = json.loads((p / "bundle.json").read_text())
    except (OSError, ValueError):
        return p.name, "unknown (no readable bundle.json)"
    name = manifest.get("name") or p.name
    if manifest.get("license"):
        return name, str(manifest["license"])
    if name == "riffwright-default":
        return name, DEFAULT_MODEL_TERMS
    return name, "set by the bundle's author (see its model card)"


def about_html(model_path: str | None) -> str:
    from engine import __version__

    name, terms = model_terms(model_path)
    rows = "".join(f"<li>{escape(a)}: {escape(b)}</li>" for a, b in THIRD_PARTY)
    card = ""
    if model_path and (Path(model_path) / "MODEL_CARD.md").exists():
        card = f"<br>Model card: {escape(str(Path(model_path) / 'MODEL_CARD.md'))}"
    return (
        f"<h3>Riffwright {escape(__version__)}</h3>"
        "<p>Accompaniment stems that fit your song, generated locally.<br>"
        "MIT licence. Copyright © 2026 the Riffwright developers.</p>"
        f"<p><b>Model</b>: {escape(name)}<br>{escape(terms)}{card}</p>"
        "<p><b>Fonts</b>: none bundled; the app uses your system's fonts.</p>"
        f"<p><b>Libraries</b>:<ul>{rows}</ul></p>"
    )
