#!/usr/bin/env bash
# Like for like (issue 27): re-decode, with today's decoding recipe and on the whole sample, every configuration
# still scored on the older, smaller subset that does not collapse. Rows behind the paper's claims and the ship
# box come first (the paper's dynamic-int8 claim rows, which are cheap, lead). Resumable: a finished slug is skipped, a killed one resumes at its last finished batch.
#   nohup bash scripts/redecode.sh > logs/redecode.log 2>&1 &
# The collapsed rows (ΔWER other above +80 on the old subset) stay on it: lib.like_for_like.COLLAPSED.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PAUSE=${PAUSE_FILE:-logs/sweep.pause}
rows=(pt-dyn-int8-aint8-pc__ pt-dyn-int8-aint8-pt__ pt-dyn-float16__ pt-dyn-int8-aint8-pc-projout__
      pt-dyn-int8-aint8-pc-enconly__ pt-dyn-int8-aint8-pc-deconly__ torchao-wo-int8__
      quanto-wo-int8__ quanto-wo-float8__ quanto-wo-int4__
      bnb-wo-nf4-double_quant1__ bnb-wo-nf4__ bnb-wo-fp4__ bnb-wo-fp4-double_quant1__
      bnb-dyn-int8-aint8-threshold6__ bnb-dyn-int8-aint8-threshold0__
      torchao-wo-int4-g64-layoutintx__
      hqq-wo-int8-g32__ hqq-wo-int8-g128__ hqq-wo-int4-g64-enconly__ hqq-wo-int4-g64-deconly__ hqq-wo-int4-g64-projout__
      pt-static-int8-aint8-pc-cal4-methodpt2e__ pt-static-int8-aint8-pc-enconly-cal4-methodpt2e__
      quanto-static-int8-aint8-cal4__ pt-static-int8-aint8-pc-deconly-cal4__
      pt-static-int8-aint8-pc-deconly-cal4-methodpt2e__)
grids=(experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml experiments/granularity.yml
       experiments/scope.yml experiments/runtimes.yml experiments/mixed.yml)
for row in "${rows[@]}"; do
  .venv/bin/python -m lib sweep "${grids[@]}" --only "$row" --refresh-outdated --no-footprint \
    --pause-file "$PAUSE" ${REDECODE_COMMIT:+--commit}
done
