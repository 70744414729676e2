#!/usr/bin/env bash
# The full sweep (resumable: finished slugs are skipped). Headline configurations run first; torchao's
# dynamic int8 and quanto's int8-activation rows run last because their int8 matmuls (torch._int_mm) are very
# slow without VNNI on this CPU (quanto static: ~45 min), and so do the static encoder/decoder-only rows, whose
# collapsed models decode to the 440-token cap.
#   nohup bash scripts/sweep.sh > logs/sweep.log 2>&1 &
# Pause between configurations with `touch logs/sweep.pause` (resume: `rm logs/sweep.pause`).
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
first=(__fp32__ pt-dyn-int8-aint8-pc__ pt-static-int8-aint8-pc-cal4__ bnb-wo-nf4-double_quant1 hqq-wo-int4-g64__ pt-dyn-int8-aint8-pc-projout
       hqq-wo-int3-g64__ quanto-wo-int8 torchao-wo-int8 bnb-dyn-int8-aint8-threshold6 hqq-wo-int8-g64__
       bnb-wo-nf4__ hqq-wo-int2-g64__ quanto-wo-int4
       methodfx methodpt2e)
args=()
for f in "${first[@]}"; do args+=(--first "$f"); done
.venv/bin/python -m lib sweep experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml \
  experiments/granularity.yml experiments/scope.yml "${args[@]}" --last quanto-dyn-int8-aint8 --last pt-static-int8-aint8-pc-enconly-cal4__ --last pt-static-int8-aint8-pc-deconly-cal4__ \
  --last torchao-dyn-int8 --pause-file logs/sweep.pause "$@"
