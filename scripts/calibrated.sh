#!/usr/bin/env bash
# Can calibration rescue 3 and 4 bits? (issue 31): decode and score the calibrated rows of
# experiments/calibrated_rounding.yml (AutoRound) and experiments/calibrated.yml (ggml k-quants with and
# without an importance matrix), the rows behind the chapter's verdict first. Resumable like every sweep.
#   nohup bash scripts/calibrated.sh > logs/calibrated.log 2>&1 &
# Footprints (whisper-small timings) are taken separately, on a quiet CPU: benchmarks/cpu_class_latency.py.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PAUSE=${PAUSE_FILE:-logs/sweep.pause}
for row in autoround-wo-int3-g64-cal4 autoround-wo-int4-g64-cal4 ggml-dyn-int3-aint8-g256-buildnative \
           ggml-dyn-int4-aint8-g256-buildnative ggml-dyn-int2-aint8-g256-buildnative autoround-wo-int3-g128-cal4; do
  .venv/bin/python -m lib sweep experiments/calibrated_rounding.yml experiments/calibrated.yml --only "$row" \
    --no-footprint --pause-file "$PAUSE" ${CALIBRATED_COMMIT:+--commit}
done
