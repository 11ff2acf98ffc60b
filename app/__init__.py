"""Riffwright's desktop interface (PySide6). Reaches torch only through `app.bridge`."""
