"""The scale inputs and benches (``make bench``)."""

from __future__ import annotations

import sys
from pathlib import Path


def require_file(path: Path, flag: str = "--data") -> Path:
    """``path`` when it is meter data (``ingest.sniff``: the file, its encoding, its header); else one line on
    stderr naming the flag and the reason, and exit 2."""
    from smart_energy.components.errors import SmartEnergyError
    from smart_energy.components.ingest import sniff

    try:
        sniff(Path(path))
        return Path(path)
    except SmartEnergyError as err:
        reason = " ".join(str(err).split())
    print(f"{Path(sys.argv[0]).name}: error: {flag} {reason}", file=sys.stderr)
    raise SystemExit(2)
