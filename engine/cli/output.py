"""The files a generating command writes: names that never overwrite, a staging folder so
that a failed run leaves --out as it was, and the report of what was written.

The takes of one run are written to a hidden staging folder inside --out and moved into
place (each provenance sidecar before its WAV) only when all of them were written: a full
or read-only disk leaves --out as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from engine.errors import RiffwrightError
from engine.fsutil import clean_stale_temps, user_write

STAGING_PREFIX = ".riffwright-staging-"


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: lower case, words joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = ""
    for w in words:
        nxt = f"{out}-{w}" if out else w
        if len(nxt) > limit:
            break
        out = nxt
    return out or (words[0][:limit] if words else "")


def stem_label(req) -> str:
    """What made a stem, for its file name: the mode (unless it is plain accompaniment or a
    single stem) and the prompt, or the mode alone without a prompt."""
    prompt = slug(req.prompt or "")
    mode = req.mode
    if not prompt:
        return mode
    return prompt if mode in ("accompaniment", "single") else f"{mode}_{prompt}"


def unique_path(out: Path, stem_name: str, suffix: str = ".wav") -> Path:
    """`out/stem_name.wav`, or with _2, _3… when that file (or its .json sidecar) exists:
    outputs never overwrite earlier ones."""
    k = 1
    while True:
        name = stem_name if k == 1 else f"{stem_name}_{k}"
        path = out / f"{name}{suffix}"
        if not path.exists() and not path.with_suffix(".json").exists():
            return path
        k += 1


def _stem_name(stem, label: str, index: int | None = None) -> str:
    part = f"part{index + 1}_" if index is not None else ""
    return f"{part}{label}_seed{stem.seed}_take{stem.take + 1}"


def check_out(out: Path) -> None:
    """Refuse an --out that cannot be a folder before any work (a file, /dev/null)."""
    if os.path.lexists(out) and not out.is_dir():
        raise RiffwrightError(f"--out {out} is not a folder; give a folder for the takes")


def _clean_stale_staging(out: Path, min_age_s: float = 3600.0) -> None:
    """Remove staging folders a killed run left in `out` (only ours, only old ones)."""
    clean_stale_temps(out, min_age_s)
    now = time.time()
    for d in out.glob(STAGING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if d.is_dir() and not d.is_symlink() and now - d.stat().st_mtime >= min_age_s:
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def staged(out: Path):
    """Yield a hidden staging folder inside `out`; when the block succeeds, move everything
    in it into `out` (a provenance sidecar before its WAV, so no WAV ever lands without
    one). On any failure nothing reaches `out` and the staging folder is removed; write
    errors become one `RiffwrightError` line."""
    with user_write(f"cannot write to {out}"):
        out.mkdir(parents=True, exist_ok=True)
        _clean_stale_staging(out)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        with user_write(f"cannot write the takes to {out}"):
            yield stage
            files = sorted(stage.iterdir(), key=lambda f: (f.stem, f.suffix != ".json"))
            for f in files:
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def file_mode() -> int:
    """rw for everyone the umask allows (0644 with the usual 022), as other programs write."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_stems(stems, out: Path, mode: str, label: str, index=None,
               stage: Path | None = None) -> list[dict]:
    """Write `stems` into `stage` (default: `out`) under names free in `out`; the rows name
    their place in `out`."""
    rows = []
    for s in stems:
        path = unique_path(out, _stem_name(s, label, index))
        if stage is not None:
            while (stage / path.name).exists():  # two takes of one run never share a name
                path = unique_path(out, path.stem + "_b")
        written = s.save((stage or out) / path.name)
        for f in (written, written.with_suffix(".json")):
            os.chmod(f, file_mode())
        rows.append({"path": str(path), "seconds": round(s.seconds, 6),
                     "sample_rate": s.sample_rate, "channels": s.channels, "seed": s.seed,
                     "take": s.take, "mode": mode, "provenance": str(path.with_suffix(".json"))})
    return rows


def report(args, rows, bundle, device) -> None:
    """What was written: one JSON object with --json, else one line per stem."""
    if args.json:
        print(json.dumps({"model": str(bundle.path), "model_hash": bundle.hash,
                          "device": str(device), "stems": rows}))
    else:
        for r in rows:
            print(f"{r['path']}  {r['seconds']:.2f} s  {r['channels']} ch  seed {r['seed']}")
        if rows and getattr(args, "seed", None) is None:
            print(f"seed {rows[0]['seed']} was drawn at random: --seed {rows[0]['seed']} "
                  "makes the same take again")
