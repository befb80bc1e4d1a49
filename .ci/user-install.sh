#!/usr/bin/env bash
# CI: install policyqa the way a user does and index one file of each format. A fresh
# venv with the pip it brings (never upgraded: a newer pip must not hide what a user's
# lacks), the CPU torch first, then `pip install .` from the declared dependencies alone
# (no constraints file). Fails if any of the five files is skipped. pip's cache is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH  # the installed package, not the checkout's src/, must be what runs

"$PY" -m venv "$WORK/venv"
echo "user install with $("$WORK/venv/bin/python" -m pip --version | cut -d' ' -f1-2)"
"$WORK/venv/bin/python" -m pip install -q "torch==2.13.0"
"$WORK/venv/bin/python" -m pip install -q "$ROOT"

# The files are written by the test venv (reportlab, a test dependency, makes the PDF).
.venv/bin/python tests/realfiles.py "$WORK/corpus"
cd "$WORK"
venv/bin/policyqa index build --corpus corpus --index index
venv/bin/policyqa index status --json --index index > status.json
venv/bin/python - status.json <<'PY'
import json, sys
status = json.load(open(sys.argv[1], encoding="utf-8"))
assert status["skipped"] == [], f"skipped on a user install: {status['skipped']}"
assert status["documents"] == 5, f"{status['documents']} documents indexed, 5 expected"
print("user install: 5 documents (txt, md, html, docx, pdf), none skipped")
PY
