"""The scale inputs and benches (``make bench``)."""

from __future__ import annotations

import sys
from pathlib import Path


def require_file(path: Path, flag: str = "--data") -> Path:
    """``path`` when it is a file; else one line on stderr naming the flag and the path, and exit 2."""
    if not Path(path).is_file():
        prog = Path(sys.argv[0]).name
        what = "is a directory, not a file" if Path(path).is_dir() else "no such file"
        print(f"{prog}: error: {flag} {path}: {what}", file=sys.stderr)
        raise SystemExit(2)
    return Path(path)
