#!/usr/bin/env bash
# Static int8 calibrated as users calibrate it (issue 29): ONNX Runtime, OpenVINO (nncf.quantize, SmoothQuant on
# and off) and PT2E on 16 and 64 utterances of the sample's own speakers, cross-fitted over two speaker folds,
# beside the 4-utterance rows. Resumable like every sweep; footprints are timed separately on a quiet CPU.
#   nohup bash scripts/static_calibration.sh > logs/static_calibration.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PAUSE=${PAUSE_FILE:-logs/sweep.pause}
for row in ort-static-int8-auint8-pc-cal64-xspk2__ ov-static-int8-aint8-cal64-xspk2__ \
           pt-static-int8-aint8-pc-cal64-methodpt2e-xspk2__ ort-static-int8-auint8-pc-cal16-xspk2__ \
           ov-static-int8-aint8-cal16-xspk2__ pt-static-int8-aint8-pc-cal16-methodpt2e-xspk2__ \
           ov-static-int8-aint8-cal64-smooth_quant0-xspk2__; do
  .venv/bin/python -m lib sweep experiments/runtimes.yml experiments/scheme.yml --only "$row" --no-footprint \
    --pause-file "$PAUSE" ${STATIC_COMMIT:+--commit}
done
