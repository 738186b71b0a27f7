"""What a command checks before its first expensive step, and the one translation of OS errors into a user's line.

Every check raises ``SmartEnergyError`` with one line that names the flag and the path and says what to do;
the CLI prints it and exits 2. The checks write nothing that stays: an output directory is probed by creating
and removing a temporary file in the nearest directory that exists, which catches a read-only file system, a
missing permission (for a user that is not root) and a path through a file, without leaving the directory.
Light on purpose (no pandas): the CLI runs these before it imports a stage.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from smart_energy.components.errors import SmartEnergyError

# what to do, by errno, for the OS errors a user can fix
_ADVICE = {
    errno.EEXIST: "it exists already; name a new path or remove it",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory; name a file",
    errno.EACCES: "permission denied; choose a path you can write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you can write",
    errno.EROFS: "read-only file system; choose a writable path",
    errno.ENOSPC: "no space left on the device; free some or choose another path",
    errno.EDQUOT: "disk quota exceeded; free some or choose another path",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_line(err: OSError) -> str:
    """One line for an OS error: the path it concerns, what happened and what to do."""
    where = err.filename if err.filename is not None else ""
    if getattr(err, "filename2", None):
        where = f"{where} -> {err.filename2}"
    what = _ADVICE.get(err.errno or -1) or (err.strerror or type(err).__name__)
    return f"{where}: {what}" if where else what


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_write(directory: Path, flag: str, path: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".se-write-probe-", dir=directory)
    except OSError as err:
        raise SmartEnergyError(f"{flag} {path}: cannot write in {directory} "
                               f"({_ADVICE.get(err.errno or -1) or err.strerror})") from None
    os.close(fd)
    os.unlink(name)


def output_dir(path: str | Path, flag: str) -> Path:
    """``path`` can be made (or is) a directory this process can write into; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SmartEnergyError(f"{flag} {path}: is a file, not a directory; name a directory (it is created "
                               f"if missing)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SmartEnergyError(f"{flag} {path}: {base} is a file, not a directory")
    _probe_write(base, flag, path)
    return path


def output_file(path: str | Path, flag: str) -> Path:
    """``path`` can be written as a file (its directory made if missing); nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise SmartEnergyError(f"{flag} {path}: is a directory; name a file")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise SmartEnergyError(f"{flag} {path}: {base} is a file, not a directory")
    _probe_write(base, flag, path)
    return path


def input_path(path: str | Path, flag: str = "") -> str | Path:
    """A local input that exists (a URI, ``scheme://...``, is checked where it is read). ``flag`` is empty for
    a positional argument."""
    named = f"{flag} {path}" if flag else str(path)
    if "://" in str(path):
        return path
    if any(c in str(path) for c in "*?["):  # a glob of meter files: at least one must match
        if not glob.glob(str(path)):
            raise SmartEnergyError(f"{named}: no file matches")
        return path
    if not Path(path).exists():
        raise SmartEnergyError(f"{named}: no such file or directory")
    return path


def model_dir(path: str | Path, flag: str = "--model-dir") -> dict:
    """A local model directory exists and verifies (``registry.read_metadata``); returns its metadata."""
    from smart_energy.components.registry import read_metadata

    if not Path(path).is_dir():
        what = "is a file" if Path(path).exists() else "no such directory"
        raise SmartEnergyError(f"{flag} {path}: {what}; give a model directory (what `smart-energy train "
                               f"--model-dir` writes)")
    return read_metadata(path)


def parse_time(text: str, flag: str) -> str:
    """An ISO date or time (``2007-02-01``, ``2007-02-01T12:00``, with or without an offset) as naive UTC ISO."""
    try:
        stamp = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise SmartEnergyError(f"{flag} {text!r}: not a date or time; use ISO, e.g. 2007-02-01 or "
                               f"2007-02-01T18:00") from None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return stamp.isoformat()


def positive(value: int | float | None, flag: str, allow_zero: bool = True) -> None:
    """A count or duration flag is not negative (and not zero unless ``allow_zero``)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise SmartEnergyError(f"{flag} {value}: must be {'0 or more' if allow_zero else 'above 0'}")
