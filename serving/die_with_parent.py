"""``python -m smart_energy.serving.die_with_parent PID MODULE [ARGS...]``: run ``python -m MODULE ARGS`` that dies with PID.

Linux's ``PR_SET_PDEATHSIG`` sends this process SIGKILL when its parent exits, however the parent
ends (SIGKILL included). It is set here, in the child, rather than in a ``preexec_fn`` (unsafe in a
parent with threads); checking the parent's pid afterwards closes the window before it was set.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above ran
        sys.exit(f"{module}: parent {parent} is gone; not starting")
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
