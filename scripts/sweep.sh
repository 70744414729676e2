#!/usr/bin/env bash
# The full sweep, in the background-friendly order of the report (resumable: finished slugs are skipped).
#   nohup bash scripts/sweep.sh > logs/sweep.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/python -m lib sweep experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml \
  experiments/granularity.yml experiments/scope.yml "$@"
