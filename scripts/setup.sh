#!/usr/bin/env bash
# Creates .venv with everything policyqa and its tests need, at the versions in
# constraints.txt. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import policyqa, torch, sentence_transformers, faiss, pexpect, lxml_html_clean, ruff, mypy, pymilvus, milvus_lite" 2>/dev/null; then
  # The pip that venv brings, as users have it: CI's user-install check proves it suffices.
  # The CPU build first: letting a dependency pull an unpinned torch downloads several GB of CUDA.
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
fi
