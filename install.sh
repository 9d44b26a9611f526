#!/usr/bin/env bash
# One-step install for a fresh Debian/Ubuntu machine (CPU) or a GPU machine.
#   - system packages: espeak-ng (speech synthesizer for the mini corpus), sox
#   - torch first (CPU build 2.13.0 here; set TORCH_SPEC to e.g. "torch==2.13.0" with a CUDA
#     index on GPU machines, or leave an existing torch alone by setting SKIP_TORCH=1)
#   - this package in editable mode with its requirements
# Safe to re-run: every step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 || need_apt+=(libespeak-ng1)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[install] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ "${SKIP_TORCH:-0}" != "1" ] && ! $PY -c "import torch" >/dev/null 2>&1; then
  echo "[install] pip install ${TORCH_SPEC:-torch==2.13.0}"
  $PY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
echo "[install] pip install -e ."
$PY -m pip install -q -e . 2>&1 | grep -v -E "Running pip as the 'root' user|^$" || true
$PY -c "import icefall, torch, lhotse; print(f'[install] ok: torch {torch.__version__}, lhotse {lhotse.__version__}')"
