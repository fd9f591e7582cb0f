#!/usr/bin/env bash
# Install torch into the given Python without ever pulling a multi-GB CUDA build onto a machine
# that has no GPU.
#   - torch already importable (e.g. the user's CUDA build): keep it.
#   - an NVIDIA GPU is visible: install the default (CUDA) wheel from PyPI.
#   - otherwise: the CPU build. On this project's machines `torch==2.13.0` resolves to a CPU wheel
#     on local disk; elsewhere the PyTorch CPU index serves it.
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed; keeping it"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch>=2.4"
else
  "$PY" -m pip install -q "torch==2.13.0" 2>/dev/null \
    || "$PY" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
