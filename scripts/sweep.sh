#!/usr/bin/env bash
# The full sweep (resumable: finished slugs are skipped; a finished configuration decodes only the utterances
# it lacks when the data grow). Headline configurations run first, then the rest in
# grid order, then the slow rows listed in `last`.
#   nohup bash scripts/sweep.sh > logs/sweep.log 2>&1 &
# Pause between configurations with `touch logs/sweep.pause` (resume: `rm logs/sweep.pause`). Each finished
# configuration is committed (results/ and book/runs/ only), so a session that ends mid-sweep loses nothing finished.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
first=(__fp32__ pt-dyn-int8-aint8-pc__ pt-static-int8-aint8-pc-cal4__ bnb-wo-nf4-double_quant1 hqq-wo-int4-g64__ pt-dyn-int8-aint8-pc-projout
       hqq-wo-int3-g64__ quanto-wo-int8 torchao-wo-int8 bnb-dyn-int8-aint8-threshold6 hqq-wo-int8-g64__
       bnb-wo-nf4__ hqq-wo-int2-g64__ quanto-wo-int4
       methodfx pt-static-int8-aint8-pc-cal4-methodpt2e enconly-cal4-methodpt2e)
args=()
for f in "${first[@]}"; do args+=(--first "$f"); done
# Last, in this order: quanto's dynamic int8 (the paper's headline claim) and torchao's, which use torch._int_mm
# (~45-75 min each); eager static on one half (the static ablation's question on the test sets); rows expected to
# collapse into hallucination loops (every batch decodes to the 440-token cap, ~30 min each); PT2E on the decoder
# alone: its exported decoder has no KV cache, so one looping utterance costs O(440^2) (stopped after 50 min once).
# torchao int4 (opaque layout) runs with compute=bf16, the library's CPU recipe: on this AVX2-only CPU its
# _weight_int4pack_mm_for_cpu kernel took 4.7 s for one 1500x512 @ 512x2048 product with fp32 activations
# (0.06 s in fp32 without quantization), 0.11 s with bf16 ones (benchmarks/int4_kernel.py). A row killed
# part-way resumes at its last finished batch (results/.partial/).
# --refresh-outdated: after every pending row, re-run the results decoded before one generate call per batch
# became the rule (lib/transcribe.py: DECODING): the fp32 reference first, then the highest WER first.
last=(pt-static-int8-aint8-pt-cal4 quanto-wo-int2 hqq-wo-int2-g32 hqq-wo-int2-g128
      quanto-dyn-int8-aint8 torchao-dyn-int8 pt-static-int8-aint8-pc-enconly-cal4__ pt-static-int8-aint8-pc-deconly-cal4__
      torchao-wo-int4-g64-computebf16 torchao-wo-int4-g128-computebf16 torchao-wo-int4-g32-computebf16
      hqq-wo-int1-g64 hqq-wo-int1-g32 hqq-wo-int1-g128 pt-static-int8-aint8-pc-deconly-cal4-methodpt2e)
for l in "${last[@]}"; do args+=(--last "$l"); done
grids=(experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml experiments/granularity.yml
       experiments/scope.yml experiments/runtimes.yml experiments/mixed.yml)
# 1. the fp32 reference on any utterance it lacks (every ΔWER and every KLD is against it)
.venv/bin/python -m lib sweep experiments/baseline.yml --only __fp32__ --pause-file logs/sweep.pause --commit
# 2. the teacher-forced fidelity pass for every configuration with a WER result (about a third of a WER run)
.venv/bin/python -m lib sweep "${grids[@]}" "${args[@]}" --fidelity-only --pause-file logs/sweep.pause --commit
# 3. WER: new configurations, then utterances a configuration lacks, then the refresh of older decodings
.venv/bin/python -m lib sweep experiments/baseline.yml experiments/scheme.yml experiments/bitwidth.yml \
  experiments/granularity.yml experiments/scope.yml experiments/runtimes.yml experiments/mixed.yml "${args[@]}" --pause-file logs/sweep.pause --commit \
  --refresh-outdated "$@"
# 4. noise robustness (test-clean, experiments/noise.yml): the verdict's core first, then the rest of the grid
bash scripts/noise_core.sh
.venv/bin/python -m lib sweep experiments/noise.yml --pause-file logs/sweep.pause --commit
