#!/usr/bin/env bash
# The noise grid's core first (resumable, each finished run committed): fp32 and the two aggressive formats of
# the verdict (bnb nf4, HQQ int3 g64) at both ends (20 and 0 dB) of both noise kinds, then the runtime winner
# (CTranslate2 int8_float32) and torch.ao dynamic int8,
# then fp32 at 10 and 5 dB. The rest of experiments/noise.yml follows with a plain
#   python -m lib sweep experiments/noise.yml --pause-file logs/sweep.pause --commit
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
for c in __fp32__ bnb-wo-nf4-double_quant1__ hqq-wo-int3-g64__ ct2-dyn-int8-aint8-floatfloat32__ pt-dyn-int8-aint8-pc__; do
  for n in babble-snr20- white-snr20- babble-snr0- white-snr0-; do
    .venv/bin/python -m lib sweep experiments/noise.yml --only "${c}test-clean__noise-${n}" \
      --pause-file logs/sweep.pause --commit
  done
done
.venv/bin/python -m lib sweep experiments/noise.yml --only __fp32__ --pause-file logs/sweep.pause --commit
