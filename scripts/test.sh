#!/usr/bin/env bash
# Set everything up, then run the test suite (benchmarks are separate: see benchmarks/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python -m pytest -q "$@"
