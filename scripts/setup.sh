#!/usr/bin/env bash
# Creates .venv with everything policyqa and its tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import policyqa, torch, sentence_transformers, faiss, pexpect" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build first: letting a dependency pull an unpinned torch downloads several GB of CUDA.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
fi
