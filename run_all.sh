#!/usr/bin/env bash
# One command for a fresh machine: set up ./.venv (pinned), register the Jupyter kernel, then run
# the notebooks of a profile in order with papermill (default profile: organism).
#
#   ./run_all.sh [--profile NAME] [--from STAGE | --only STAGE | --until STAGE | --figures-only]
#                [--force] [--dry-run] [--verbose] [--update-readme]
#   ./run_all.sh --test [pytest args]     set up the same way, then run the test suite
#   ./run_all.sh --lab [--profile NAME [--results DIR]] [--port N]   JupyterLab on the notebooks (with
#                                         --profile: on that profile's executed copies in results/NAME/notebooks/)
#   ./run_all.sh --setup                  only set up the environment
#   ./run_all.sh --help                   (no set-up needed)
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
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import rlsft.runner" 2>/dev/null; then
      exec "$VENV/bin/python" -m rlsft.runner --help
    fi
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    echo "(the full option list appears here once ./run_all.sh --setup has installed the environment)"
    ;;
  --lab)
    shift
    setup
    folder="notebooks" profile="" port="" results="results"
    while [ $# -gt 0 ]; do
      case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --results) results="$2"; shift 2 ;;
        *) echo "run_all.sh --lab: unknown option $1 (use --profile NAME, --results DIR, --port N)" >&2; exit 2 ;;
      esac
    done
    if [ -n "$profile" ]; then
      folder="$results/$profile/notebooks"
      [ -d "$folder" ] || { echo "run_all.sh --lab: $folder does not exist: run ./run_all.sh --profile $profile first" >&2; exit 2; }
    fi
    echo "[lab] JupyterLab on $folder with the 'Python (rlsft)' kernel; logs of the last run: results/<profile>/logs/"
    root_flag=""
    [ "$(id -u)" = "0" ] && root_flag="--allow-root"   # containers and CI run as root
    exec "$VENV/bin/jupyter" lab --notebook-dir="$folder" --MappingKernelManager.default_kernel_name=rlsft \
      $root_flag ${port:+--port="$port"} ${RLSFT_LAB_ARGS:-}
    ;;
  *)
    setup
    exec "$VENV/bin/python" -m rlsft.runner "$@"
    ;;
esac
