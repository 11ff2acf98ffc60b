"""Atomic file writes: a file appears complete or not at all.

Everything the engine writes for a user (stems, sessions, bundles, manifests, checkpoints)
goes through `atomic_path`: the data is written to a temporary file beside the target,
flushed to disk, given ordinary permissions (0644), and renamed over the target. A full
disk, a crash or a cancelled job leaves the previous file untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import RiffwrightError


def _temp_beside(path: Path) -> Path:
    """An empty hidden temp file in `path`'s folder (made if missing), keeping its suffix so
    libraries that pick a format from the extension write the right thing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _seal(tmp_path: Path, mode: int) -> None:
    """Flush a finished temp file to disk and give it its final permissions."""
    with open(tmp_path, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp_path, mode)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`.

    The temporary name keeps the target's suffix, so libraries that pick a format from the
    extension (soundfile, numpy, zipfile) write the right thing.
    """
    path = Path(path)
    tmp_path = _temp_beside(path)
    try:
        yield tmp_path
        _seal(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_json_object(path: Path, error: type[Exception] = RiffwrightError,
                     holds: str = "a JSON object") -> dict:
    """The JSON object in a file the user gave (a manifest, a session), or `error` with
    one line: the file cannot be read, is not JSON (the parser's words, cut short), or
    holds something else than an object (`holds` says what it should hold)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested too deep
        raise error(f"{path} is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(obj, dict):
        raise error(f"{path} must hold {holds}")
    return obj


# --------------------------------------------------------------------------------------------
# never overwrite, say what went wrong, clean up after a crash

_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]{1,8})?$")
"""Names `atomic_path` and `engine.audio.write_audio` give their temporary files
(`.<stem>.<8 random>.tmp<suffix>`); nothing else is ever removed as a leftover."""

STALE_TEMP_SECONDS = 3600.0


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name))


def clean_stale_temps(folder: str | os.PathLike, min_age_s: float = STALE_TEMP_SECONDS) -> int:
    """Remove our own temporary files left in `folder` by a crash; returns how many.

    Only names matching our temporary-file pattern and older than `min_age_s` are removed (a
    younger one may belong to a write still in progress, e.g. an autosave); never a folder,
    never a link, never anything else.
    """
    folder = Path(folder)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= min_age_s:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def numbered_name(path: Path, n: int) -> Path:
    """'take.wav' -> 'take 2.wav' (n = 2), the way file managers name a second copy."""
    return path if n < 2 else path.with_name(f"{path.stem} {n}{path.suffix}")


def place_new(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished file `tmp` to `path`, or to 'path 2', 'path 3'... when that name is
    taken; an existing file is never replaced. Returns where the file went.

    A hard link refuses an existing name atomically (no race with another writer); on file
    systems without hard links (FAT, some network shares) the name is checked, then renamed.
    """
    tmp, path = Path(tmp), Path(path)
    for n in range(1, 10_000):
        target = numbered_name(path, n)
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                               errno.EMLINK, errno.ENOSYS):
                raise
            if os.path.lexists(target):
                continue
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        return target
    raise FileExistsError(errno.EEXIST, "too many files with this name", str(path))


@contextmanager
def new_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[list]:
    """Like `atomic_path`, but never replaces an existing file: yields `[tmp]`; on success
    the list gets the final path ('name 2.wav' when 'name.wav' exists) appended."""
    path = Path(path)
    tmp_path = _temp_beside(path)
    holder: list = [tmp_path]
    try:
        yield holder
        _seal(tmp_path, mode)
        holder.append(place_new(tmp_path, path))
    finally:
        tmp_path.unlink(missing_ok=True)


_ERRNO_TEXT = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "a file name is too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder is in the way",
    errno.EEXIST: "a file is in the way",
    errno.ENOENT: "the folder does not exist",
    errno.EIO: "the disk reported an input/output error",
}


def os_error_text(e: BaseException) -> str:
    """One line for a failed write: what went wrong in words, then the file when known."""
    if isinstance(e, OSError):
        what = _ERRNO_TEXT.get(e.errno) or (e.strerror or str(e) or type(e).__name__)
        return f"{what} ({e.filename})" if e.filename else what
    text = " ".join(str(e).split())  # soundfile: "Error opening '...': System error."
    return text or type(e).__name__


def write_error_types() -> tuple[type[BaseException], ...]:
    """What a write can raise besides our own errors: OSError, and libsndfile's errors
    (not OSErrors) for a full disk or an unwritable file."""
    try:
        import soundfile as sf

        return (OSError, sf.LibsndfileError)
    except (ImportError, AttributeError, OSError):
        return (OSError,)


@contextmanager
def user_write(what: str, error: type[Exception] | None = None) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, permissions, name too long) into one
    `RiffwrightError` line: '<what>: the disk is full (path)'."""
    try:
        yield
    except write_error_types() as e:
        raise (error or RiffwrightError)(f"{what}: {os_error_text(e)}") from None
