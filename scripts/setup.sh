#!/usr/bin/env bash
# Install sparsetrain with its train + dev extras into the current Python.
#
# torch is installed first, so that pip never resolves a bare "torch" itself:
#   1. a torch that is already importable is kept;
#   2. else, if pip's find-links hold a local wheel of $TORCH_VERSION (default
#      2.13.0; the CPU build on our machines), that wheel, with its own
#      dependencies from the package index;
#   3. else, on a machine with an NVIDIA driver, PyPI's default (CUDA) build;
#   4. else the CPU-only build from download.pytorch.org.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: using installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif "${PIP[@]}" --dry-run --no-index --no-deps "torch==${TORCH_VERSION:-2.13.0}" >/dev/null 2>&1; then
  "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
  echo "setup: installed torch ${TORCH_VERSION:-2.13.0} from a local wheel"
elif command -v nvidia-smi >/dev/null 2>&1; then
  "${PIP[@]}" torch
else
  "${PIP[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi

"${PIP[@]}" -e ".[dev]"
echo "setup: sparsetrain $("$PY" -c 'import sparsetrain; print(sparsetrain.__version__)') ready"
