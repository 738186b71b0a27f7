#!/usr/bin/env bash
# The peers' own venv for `make bench` (section peers): statsforecast, mlforecast and LightGBM, exact pins.
#   bash benchmarks/peers_env.sh install [VENV]   create VENV (default .venv-peers) from benchmarks/peers.lock
#   bash benchmarks/peers_env.sh lock             re-resolve benchmarks/peers.lock from benchmarks/peers.in,
#                                                 constrained by requirements.lock (the packages both share keep
#                                                 the project's versions; the main lock is never touched)
# The peers resolve together with requirements.lock, but run apart: our venv never imports them, and theirs
# holds nothing but them (benchmarks/peers_fit.py reads our hours from a file and writes its forecasts to one).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
case "${1:-install}" in
  install)
    venv="${2:-.venv-peers}"
    if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt benchmarks/peers.lock ]; then exit 0; fi
    test -x "$venv/bin/python" || uv venv --quiet --python 3.11 "$venv"
    uv pip sync --quiet --python "$venv/bin/python" benchmarks/peers.lock
    touch "$venv/.installed"
    ;;
  lock)
    uv pip compile --quiet benchmarks/peers.in -c requirements.lock --python-version 3.11 --no-header --no-annotate \
      -o benchmarks/peers.lock
    ;;
  *)
    echo "usage: $0 install [VENV] | lock" >&2
    exit 2
    ;;
esac
