#!/usr/bin/env bash
# Set everything up, then run the test suite (benchmarks are separate: see benchmarks/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
# one compute thread a test process, as every build runs (docs/benchmarks.md, "Threads"): the suite's
# processes share the cores, and a thread per core in each would spin while it waits for one
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" \
       OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
# two processes, each a whole test file at a time (module fixtures are built once): about half the wall time
# of one process on two cores; SPEECHMILL_TEST_WORKERS=0 runs everything in this process
python -m pytest -q -n "${SPEECHMILL_TEST_WORKERS:-2}" --dist loadfile "$@"
