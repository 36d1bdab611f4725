#!/usr/bin/env bash
# One command for a fresh machine: set up ./.venv (pinned), register the Jupyter kernel, then run
# the notebooks of a profile in order with papermill (default profile: organism).
#
#   ./run_all.sh [--profile NAME] [--from STAGE | --only STAGE | --figures-only] [--force] [--dry-run]
#   ./run_all.sh --test [pytest args]     set up the same way, then run the test suite
#   ./run_all.sh --setup                  only set up the environment
#   ./run_all.sh --help
set -euo pipefail
cd "$(dirname "$0")"
VENV=".venv"
PY="${PYTHON:-python3}"
EXTRAS="${RLSFT_EXTRAS:-cpu,dev}"   # RLSFT_EXTRAS=gpu,dev on a CUDA machine (vllm + torch 2.14)

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PY --version 2>&1)"
    "$PY" -m venv "$VENV"
  fi
  # reinstall only when the pins change: a stamp holds the hash of pyproject.toml and the extras
  local stamp="$VENV/.rlsft-installed" want
  want="$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing pinned dependencies (extras: $EXTRAS)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name rlsft --display-name "Python (rlsft)" >/dev/null
    echo "$want" > "$stamp"
  else
    echo "[setup] $VENV up to date"
  fi
}

case "${1:-}" in
  --test)
    shift
    setup
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  --setup)
    setup
    ;;
  --help|-h)
    setup >/dev/null
    exec "$VENV/bin/python" -m rlsft.runner --help
    ;;
  *)
    setup
    exec "$VENV/bin/python" -m rlsft.runner "$@"
    ;;
esac
