#!/usr/bin/env bash
# Fresh machine to first answer: set up, index the bundled corpus, ask the seed question.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/policyqa index build
.venv/bin/policyqa ask "what financing support exists for seed-stage firms"
