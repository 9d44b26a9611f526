#!/usr/bin/env bash
# One-step install for a fresh Debian/Ubuntu machine (CPU) or a GPU machine:
#   - system packages: espeak-ng (speech synthesizer for the mini corpus), sox, irstlm (builds
#     the n-gram LMs of lexicon + LM decoding), and python3-venv where `python3 -m venv` needs it
#   - a virtual environment, .venv in the repository root (VENV=dir puts it elsewhere), so that
#     what runs is what requirements.txt declares, not what the system Python happens to hold;
#     activate it afterwards: . .venv/bin/activate
#   - torch first (an unpinned torch would pull a CUDA build): torch==2.13.0, the CPU build; on
#     a GPU machine set TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>", or
#     install torch into the environment before running this (an installed torch is left alone)
#   - this package in editable mode with its requirements, then `pip check`
# Safe to re-run: every step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  echo "[install] apt-get install $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 || need_apt+=(libespeak-ng1)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
[ -x /usr/lib/irstlm/bin/tlm ] || command -v tlm >/dev/null 2>&1 || need_apt+=(irstlm)
[ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"

venv=${VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "[install] python3 -m venv $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then  # Debian ships venv's ensurepip separately
    rm -rf "$venv"
    apt_install "python$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    python3 -m venv "$venv"
  fi
fi
PY=$venv/bin/python
export PIP_ROOT_USER_ACTION=ignore  # root in a container installs into the venv: fine

if [ "${SKIP_TORCH:-0}" != "1" ] && ! $PY -c "import torch" >/dev/null 2>&1; then
  torch_spec=${TORCH_SPEC:-torch==2.13.0}
  echo "[install] pip install $torch_spec"
  $PY -m pip install -q $torch_spec  # unquoted: TORCH_SPEC may carry --index-url URL
fi
echo "[install] pip install -e ."
$PY -m pip install -q -e .
$PY -m pip check
$PY -c "import icefall, torch, lhotse; print(f'[install] ok: torch {torch.__version__}, lhotse {lhotse.__version__}')"
echo "[install] activate the environment before running anything: . $venv/bin/activate"
