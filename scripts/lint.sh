#!/usr/bin/env bash
# Set up if needed, then lint and type-check as CI does before the tests: ruff over src,
# tests and bench, mypy over src/policyqa (both configured in pyproject.toml). Both run,
# so that every finding shows; the exit status is non-zero if either found anything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/ruff check src tests bench || status=1
.venv/bin/mypy || status=1
exit "$status"
