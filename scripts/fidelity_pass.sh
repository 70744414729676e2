#!/usr/bin/env bash
# The fp32 reference on the utterances it lacks, then the fidelity pass for every configuration (steps 1-2 of
# scripts/sweep.sh), without the WER sweep:  nohup bash scripts/fidelity_pass.sh > logs/fidelity.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
grids=(experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml experiments/granularity.yml
       experiments/scope.yml)
first=(__fp32__ pt-dyn-int8-aint8-pc__ pt-static-int8-aint8-pc-cal4__ bnb-wo-nf4-double_quant1 hqq-wo-int4-g64__
       pt-dyn-int8-aint8-pc-projout hqq-wo-int3-g64__ quanto-wo-int8 torchao-wo-int8 bnb-dyn-int8-aint8-threshold6
       hqq-wo-int8-g64__ bnb-wo-nf4__ quanto-dyn-int8 torchao-wo-int4 pt-dyn-float16 quanto-wo-int4)
args=()
for f in "${first[@]}"; do args+=(--first "$f"); done
.venv/bin/python -m lib sweep experiments/baseline.yml --only __fp32__ --pause-file logs/sweep.pause --commit
.venv/bin/python -m lib sweep "${grids[@]}" "${args[@]}" --fidelity-only --pause-file logs/sweep.pause --commit "$@"
